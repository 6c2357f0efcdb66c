//! The per-evaluation sandbox: counts operations (nodes visited, items iterated) and bytes
//! built, and fails the evaluation the moment either passes its limit.

use super::{EvalError, Limits};

/// Deepest value the evaluator builds or walks (arrays in arrays, `reduce` scopes in scopes).
/// Converting, printing and dropping values recurse, so this bounds the stack they use;
/// JSON from the API nests at most 128 levels and rules at most `Limits::max_depth`.
pub const MAX_VALUE_DEPTH: usize = 512;

/// How many bytes of text one operation pays for reading.
pub const SCAN_BYTES_PER_OPERATION: usize = 64;

pub(crate) struct Budget {
    operations: u64,
    max_operations: u64,
    bytes: u64,
    max_bytes: u64,
}

impl Budget {
    pub(crate) fn new(limits: &Limits) -> Self {
        Self {
            operations: 0,
            max_operations: limits.max_operations,
            bytes: 0,
            max_bytes: limits.max_bytes_built,
        }
    }

    /// One node visited or one item iterated.
    #[inline]
    pub(crate) fn tick(&mut self) -> Result<(), EvalError> {
        self.operations = self.operations.saturating_add(1);
        if self.operations > self.max_operations {
            return Err(EvalError::OperationBudget {
                limit: self.max_operations,
            });
        }
        Ok(())
    }

    /// `n` operations at once (a scan over `n` items, say).
    pub(crate) fn spend(&mut self, n: u64) -> Result<(), EvalError> {
        self.operations = self.operations.saturating_add(n);
        if self.operations > self.max_operations {
            return Err(EvalError::OperationBudget {
                limit: self.max_operations,
            });
        }
        Ok(())
    }

    /// Text of `bytes` bytes read (measured, compared, sliced, parsed): one operation per 64
    /// bytes, so work on long strings is paid for even when its result is small.
    #[inline]
    pub(crate) fn scan(&mut self, bytes: usize) -> Result<(), EvalError> {
        self.spend((bytes / SCAN_BYTES_PER_OPERATION) as u64)
    }

    /// Called before building a string or array of `n` bytes, so nothing over the limit is
    /// ever allocated.
    pub(crate) fn build(&mut self, n: u64) -> Result<(), EvalError> {
        self.bytes = self.bytes.saturating_add(n);
        if self.bytes > self.max_bytes {
            return Err(EvalError::BytesBudget {
                limit: self.max_bytes,
            });
        }
        Ok(())
    }

    /// How many operations this evaluation has used so far.
    pub(crate) fn operations(&self) -> u64 {
        self.operations
    }
}

/// Fails when a walk or a built value goes deeper than [`MAX_VALUE_DEPTH`].
pub(crate) fn check_depth(depth: usize) -> Result<(), EvalError> {
    if depth > MAX_VALUE_DEPTH {
        return Err(EvalError::TooDeep {
            limit: MAX_VALUE_DEPTH,
        });
    }
    Ok(())
}
