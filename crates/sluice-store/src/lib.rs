//! sluice's storage (being written).
