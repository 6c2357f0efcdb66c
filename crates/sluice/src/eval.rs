//! `sluice eval`: evaluate JSONLogic from the command line, once (`--rule`/`--data`) or as a
//! JSON-lines filter other tools can drive (`{"rule","data"}` in, one result line out).

use crate::cli::EvalArgs;
use serde_json::{json, Value};
use sluice_core::logic::{Limits, Logic};
use std::io::{BufRead, Write};
use std::process::ExitCode;

/// Evaluates one rule against one data value; the error is a message fit to print.
pub fn evaluate(rule: &Value, data: &Value, limits: &Limits) -> Result<Value, String> {
    let logic = Logic::compile(rule, limits).map_err(|e| format!("invalid rule: {e}"))?;
    logic.evaluate(data).map_err(|e| e.to_string())
}

/// A rule's result with why, as JSON: `{"result", "matched", "summary", "explanation"}`.
pub fn explain(rule: &Value, data: &Value, limits: &Limits) -> Result<Value, String> {
    let logic = Logic::compile(rule, limits).map_err(|e| format!("invalid rule: {e}"))?;
    let explained = logic.explain(data).map_err(|e| e.to_string())?;
    Ok(json!({
        "result": explained.result,
        "matched": explained.matched,
        "summary": explained.summary,
        "explanation": explained.tree,
    }))
}

/// The explanation drawn for a person: the result, the summary, then the tree indented.
fn explain_text(rule: &Value, data: &Value, limits: &Limits) -> Result<String, String> {
    let logic = Logic::compile(rule, limits).map_err(|e| format!("invalid rule: {e}"))?;
    let explained = logic.explain(data).map_err(|e| e.to_string())?;
    let mut out = format!("{}\nwhy: {}\n", explained.result, explained.summary);
    for line in sluice_core::logic::tree_lines(&explained.tree) {
        out.push_str(&"  ".repeat(line.depth));
        out.push_str(&line.text);
        out.push('\n');
    }
    Ok(out)
}

/// One input line → one output line (`result` or `{"error": …}`; with `explain`, the result
/// explained). `Err` only when the line is not JSON at all, which makes the whole input
/// invalid JSON lines.
pub fn evaluate_line(line: &str, limits: &Limits, explain_it: bool) -> Result<Value, Value> {
    let input: Value = match serde_json::from_str(line) {
        Ok(input) => input,
        Err(e) => return Err(json!({ "error": format!("input is not JSON: {e}") })),
    };
    let Some(object) = input.as_object() else {
        return Ok(json!({ "error": "each line must be an object {\"rule\": …, \"data\": …}" }));
    };
    let Some(rule) = object.get("rule") else {
        return Ok(json!({ "error": "missing \"rule\"" }));
    };
    let data = object.get("data").unwrap_or(&Value::Null);
    let answer = if explain_it {
        explain(rule, data, limits)
    } else {
        evaluate(rule, data, limits)
    };
    Ok(match answer {
        Ok(result) => result,
        Err(message) => json!({ "error": message }),
    })
}

pub fn run(args: EvalArgs) -> ExitCode {
    let limits = Limits::default();
    if let (Some(rule), Some(data)) = (args.rule, args.data) {
        let parsed = serde_json::from_str::<Value>(&rule)
            .map_err(|e| format!("--rule is not JSON: {e}"))
            .and_then(|rule| {
                serde_json::from_str::<Value>(&data)
                    .map_err(|e| format!("--data is not JSON: {e}"))
                    .map(|data| (rule, data))
            });
        let answer = parsed.and_then(|(rule, data)| {
            if args.explain {
                explain_text(&rule, &data, &limits)
            } else {
                evaluate(&rule, &data, &limits).map(|result| format!("{result}\n"))
            }
        });
        return match answer {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(message) => {
                eprintln!("sluice eval: {message}");
                ExitCode::FAILURE
            }
        };
    }
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut all_json = true;
    for line in stdin.lock().lines() {
        let line = match line {
            Ok(line) => line,
            Err(e) => {
                eprintln!("sluice eval: cannot read stdin: {e}");
                return ExitCode::FAILURE;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        let answer = evaluate_line(&line, &limits, args.explain).unwrap_or_else(|error| {
            all_json = false;
            error
        });
        // Flush per line so a driving process can read each answer as it is produced.
        if writeln!(out, "{answer}")
            .and_then(|()| out.flush())
            .is_err()
        {
            return ExitCode::FAILURE; // the reader went away
        }
    }
    if all_json {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_answer_results_or_errors() {
        let limits = Limits::default();
        let ok = evaluate_line(
            r#"{"rule":{">=":[{"var":"amount"},50]},"data":{"amount":100}}"#,
            &limits,
            false,
        );
        assert_eq!(ok, Ok(json!(true)));
        let unknown = evaluate_line(r#"{"rule":{"nope":[1]},"data":{}}"#, &limits, false).unwrap();
        assert!(unknown["error"].as_str().unwrap().contains("nope"));
        assert!(evaluate_line("not json", &limits, false).is_err());
        let explained = evaluate_line(
            r#"{"rule":{">=":[{"var":"amount"},50]},"data":{"amount":10}}"#,
            &limits,
            true,
        )
        .unwrap();
        assert_eq!(explained["summary"], "amount (10) >= 50 is false");
        assert_eq!(explained["explanation"]["args"][0]["var"], "amount");
        let missing = evaluate_line(r#"{"data":{}}"#, &limits, false).unwrap();
        assert_eq!(missing, json!({"error": "missing \"rule\""}));
    }
}
