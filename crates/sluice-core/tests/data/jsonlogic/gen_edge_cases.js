// Generates edge_cases.json: JSONLogic corner cases with the answers json-logic-js 2.0.5
// gives, so the expected column comes from the reference implementation, not from us.
//
// Re-run (the tests never need node; they read the generated edge_cases.json):
//
//   cd /tmp && npm install json-logic-js@2.0.5
//   cd crates/sluice-core/tests/data/jsonlogic
//   NODE_PATH=/tmp/node_modules node gen_edge_cases.js > edge_cases.json
//
// Results go through JSON.stringify, as a JSON API would send them: NaN and Infinity become
// null, undefined in an array becomes null, and a top-level undefined is written as null.
// sluice returns the same. Cases where json-logic-js throws, or returns a string JSON
// cannot carry (a lone surrogate), are not in the table: the script refuses them, and
// jsonlogic_edge_cases.rs tests what sluice does instead.

"use strict";
const jsonLogic = require("json-logic-js");

// json-logic-js's `log` prints with console.log; keep stdout for the table.
console.log = () => {};

const items = [
  { qty: 1, sku: "apple", price: 1.5 },
  { qty: 2, sku: "banana", price: 0.25 },
];

const sections = [
  ["Truthiness: [] is false; \"0\", {}, [0] and \" \" are true", [
    [{ "!!": [[]] }, null],
    [{ "!!": [[0]] }, null],
    [{ "!!": ["0"] }, null],
    [{ "!!": [" "] }, null],
    [{ "!!": [{}] }, null],
    [{ "!!": [{ a: 1, b: 2 }] }, null],
    [{ "!!": [{ var: "o" }] }, { o: {} }],
    [{ if: [{ var: "o" }, "yes", "no"] }, { o: {} }],
    [{ if: [{ var: "a" }, "yes", "no"] }, { a: [] }],
    [{ "!": [{ var: "missing" }] }, {}],
    [{ if: [0, "a", [], "b", {}, "c", "d"] }, null],
    [{ "?:": [] }, null],
    [{ if: true }, null],
  ]],
  ["Loose equality follows JavaScript's ==", [
    [{ "==": [null, null] }, null],
    [{ "==": [null, 0] }, null],
    [{ "==": [null, false] }, null],
    [{ "==": [null, ""] }, null],
    [{ "==": [0, false] }, null],
    [{ "==": ["", 0] }, null],
    [{ "==": ["0", false] }, null],
    [{ "==": ["1", true] }, null],
    [{ "==": [true, "true"] }, null],
    [{ "==": ["abc", 0] }, null],
    [{ "==": [" 1 ", 1] }, null],
    [{ "==": ["\u00a0 1\n", 1] }, null],
    [{ "==": ["1e3", 1000] }, null],
    [{ "==": ["0x10", 16] }, null],
    [{ "==": [1, "1.0"] }, null],
    [{ "==": [[1], 1] }, null],
    [{ "==": [[1, 2], "1,2"] }, null],
    [{ "==": [[], ""] }, null],
    [{ "==": [[], 0] }, null],
    [{ "==": [[], false] }, null],
    [{ "==": [[1], [1]] }, null],
    [{ "==": [{ var: "a" }, { var: "a" }] }, { a: [1] }],
    [{ "===": [{ var: "a" }, { var: "a" }] }, { a: { x: 1 } }],
    [{ "===": [{ var: "a" }, { var: "b" }] }, { a: [1], b: [1] }],
    [{ "==": [{ var: "o" }, "[object Object]"] }, { o: { x: 1 } }],
    [{ "==": [{ var: "nope" }, null] }, {}],
    [{ "==": [{ and: [] }, null] }, null],
    [{ "===": [{ and: [] }, null] }, null],
    [{ "==": [{ "/": [0, 0] }, { "/": [0, 0] }] }, null],
    [{ "!=": ["1", 1] }, null],
    [{ "!==": ["1", 1] }, null],
    [{ "==": [{ var: "n" }, "5"] }, { n: 5 }],
  ]],
  ["Identity: array literals are fresh arrays at each evaluation", [
    [{ reduce: [[1, 2], { if: [{ "==": [{ var: "accumulator" }, [9]] }, "same", [9]] }, null] }, null],
    [{ map: [[[1]], { "==": [{ var: "" }, { var: "" }] }] }, null],
    [{ in: [{ var: "a.0" }, { var: "a" }] }, { a: [{ x: 1 }] }],
    [{ in: [[1], [[1]]] }, null],
  ]],
  ["Comparisons: strings compare as text, anything else as numbers; NaN is never ordered", [
    [{ "<": ["a", "b"] }, null],
    [{ "<": ["B", "a"] }, null],
    [{ "<": ["10", "9"] }, null],
    [{ "<": [10, "9"] }, null],
    [{ "<": ["abc", 1] }, null],
    [{ ">": ["abc", 1] }, null],
    [{ ">=": ["abc", "abc"] }, null],
    [{ "<": [null, 1] }, null],
    [{ "<": [{ var: "nope" }, 1] }, {}],
    [{ "<=": [null, 0] }, null],
    [{ ">=": [null, 0] }, null],
    [{ "<=": [null, null] }, null],
    [{ "<": [null, { and: [] }] }, null],
    [{ "<": [true, 2] }, null],
    [{ "<=": ["", 0] }, null],
    [{ "<": [[2], [10]] }, null],
    [{ "<": [[2], 10] }, null],
    [{ "<": [{ "/": [1, 0] }, 5] }, null],
    [{ ">": [{ "/": [1, 0] }, 5] }, null],
    [{ "<": ["-Infinity", -1e308] }, null],
    [{ "<": ["\uffff", "\ud83d\ude00"] }, null],
    [{ "<": [1, 2, "3"] }, null],
    [{ "<": ["1", "2", "10"] }, null],
    [{ "<": [1, { and: [] }, 3] }, null],
    [{ "<": [1, 2, { and: [] }] }, null],
    [{ "<=": [1, 1, 1] }, null],
    [{ "<": [{ var: "x" }, 10, 20] }, { x: 15 }],
    [{ ">": [{ var: "created" }, "2024-01-01"] }, { created: "2024-03-05T10:00:00Z" }],
  ]],
  ["+ and * use parseFloat; - / % use Number()", [
    [{ "+": [] }, null],
    [{ "+": ["1", "2"] }, null],
    [{ "+": ["1.5abc", 1] }, null],
    [{ "+": ["abc", 1] }, null],
    [{ "+": [null, 1] }, null],
    [{ "+": [true, 1] }, null],
    [{ "+": [[1, 2], 1] }, null],
    [{ "+": [" 12 ", 1] }, null],
    [{ "+": ["1e3", 0] }, null],
    [{ "+": ["0x10", 0] }, null],
    [{ "+": [".5", ".5"] }, null],
    [{ "+": ["Infinity", 0] }, null],
    [{ "+": [0.1, 0.2] }, null],
    [{ "+": [1.5, 1.5] }, null],
    [{ "*": ["3"] }, null],
    [{ "*": [[2]] }, null],
    [{ "*": ["2", "3"] }, null],
    [{ "*": ["2px", 3] }, null],
    [{ "*": [null, 3] }, null],
    [{ "*": [1e200, 1e200] }, null],
    [{ "-": ["5"] }, null],
    [{ "-": [[5]] }, null],
    [{ "-": [null] }, null],
    [{ "-": ["abc"] }, null],
    [{ "-": ["", 1] }, null],
    [{ "-": [true, 1] }, null],
    [{ "-": ["0x1A", 0] }, null],
    [{ "-": ["-0x1A", 0] }, null],
    [{ "-": ["0b101", 0] }, null],
    [{ "-": ["0o17", 0] }, null],
    [{ "-": ["1_000", 0] }, null],
    [{ "-": ["5px", 1] }, null],
    [{ "-": [5, null] }, null],
    [{ "-": [[], 1] }, null],
    [{ "-": [5, { and: [] }] }, null],
    [{ "/": [1, 0] }, null],
    [{ "/": [-1, 0] }, null],
    [{ "/": [0, 0] }, null],
    [{ "/": [1, 3] }, null],
    [{ "/": ["6", "2"] }, null],
    [{ "%": [5, 0] }, null],
    [{ "%": [-5, 3] }, null],
    [{ "%": [5.5, 2] }, null],
    [{ max: [] }, null],
    [{ min: [] }, null],
    [{ max: ["3", 2] }, null],
    [{ max: [1, "a"] }, null],
    [{ max: [null, -1] }, null],
    [{ min: [true, 2] }, null],
    [{ max: [[5], 2] }, null],
    [{ "/": [1, { max: [{ "-": [0] }, 0] }] }, null],
    [{ "/": [1, { min: [0, { "-": [0] }] }] }, null],
  ]],
  ["cat writes values as JavaScript's String() does", [
    [{ cat: [1.0, 0.5] }, null],
    [{ cat: [1e21] }, null],
    [{ cat: [1e-7] }, null],
    [{ cat: [0.000001] }, null],
    [{ cat: [1152921504606846976, "|", 1e20] }, null],
    [{ cat: [-1.5e-10, "|", 5e-324, "|", 1.5e300] }, null],
    [{ cat: [null, "a", { and: [] }] }, null],
    [{ cat: [[1, [2, 3]], "x"] }, null],
    [{ cat: [[null, 1]] }, null],
    [{ cat: [true, false] }, null],
    [{ cat: [{ var: "o" }] }, { o: { a: 1 } }],
    [{ cat: [{ "-": [0] }] }, null],
    [{ cat: [{ "/": [1, 0] }, { "/": [0, 0] }] }, null],
    [{ cat: [{ "+": [0.1, 0.2] }] }, null],
    [{ cat: [] }, null],
    [{ cat: ["Order ", { var: "id" }, " for ", { var: "amount" }] }, { id: 42, amount: 99.9 }],
  ]],
  ["in: substring of a string, strict membership of an array, false otherwise", [
    [{ in: ["", "abc"] }, null],
    [{ in: ["a", ""] }, null],
    [{ in: ["", ""] }, null],
    [{ in: [1, "a1b"] }, null],
    [{ in: [null, "nullable"] }, null],
    [{ in: [1, [1, 2]] }, null],
    [{ in: ["1", [1, 2]] }, null],
    [{ in: ["a", { var: "o" }] }, { o: { a: 1 } }],
    [{ in: ["a", null] }, null],
    [{ in: ["a", 123] }, null],
    [{ in: ["a", []] }, null],
    [{ in: [{ var: "country" }, ["PT", "ES"]] }, { country: "PT" }],
  ]],
  ["substr counts UTF-16 units; a negative length drops from the end", [
    [{ substr: ["abc", 1, 0] }, null],
    [{ substr: ["abc", "1"] }, null],
    [{ substr: [12345, 1, 2] }, null],
    [{ substr: ["abc", -10] }, null],
    [{ substr: ["abc", 10] }, null],
    [{ substr: ["abc", 1, -10] }, null],
    [{ substr: ["abcdef", 0, "-1"] }, null],
    [{ substr: ["abcdef", 1, [-2]] }, null],
    [{ substr: ["h\u00e9llo", 1, 3] }, null],
    [{ substr: ["a\ud83d\ude00b", 1, 2] }, null],
    [{ substr: [null, 0, 2] }, null],
    [{ substr: ["abc", null] }, null],
    [{ substr: ["abc", 1.7] }, null],
    [{ substr: ["abc", 0, 1.9] }, null],
    [{ substr: [[1, 2, 3], 1, 3] }, null],
    [{ substr: ["abc"] }, null],
    [{ substr: ["abc", "x"] }, null],
  ]],
  ["merge flattens one level", [
    [{ merge: [[1, [2]], 3] }, null],
    [{ merge: [null] }, null],
    [{ merge: "a" }, null],
    [{ merge: [{ var: "a" }, { var: "b" }] }, { a: [1, 2], b: 3 }],
  ]],
  ["var: dotted paths, indexes, length, defaults, null, numeric names", [
    [{ var: "a.0" }, { a: [5] }],
    [{ var: "a.length" }, { a: [1, 2, 3] }],
    [{ var: "s.length" }, { s: "h\u00e9llo" }],
    [{ var: "s.1" }, { s: "abc" }],
    [{ var: "a.01" }, { a: [5, 6] }],
    [{ var: "-1" }, [1, 2]],
    [{ var: ["a", "d"] }, { a: null }],
    [{ var: ["a.b", "d"] }, { a: null }],
    [{ var: "a" }, { a: false }],
    [{ var: ["a", 1] }, { a: 0 }],
    [{ var: ["a", 1] }, { a: "" }],
    [{ var: ["x", { "+": [1, 2] }] }, {}],
    [{ var: "a..b" }, { a: { "": { b: 1 } } }],
    [{ var: "" }, { a: 1 }],
    [{ var: 1.5 }, { 1: { 5: "x" } }],
    [{ var: true }, { true: 1 }],
    [{ var: 0 }, ["a"]],
    [{ var: "a.b" }, { a: "str" }],
    [{ var: "a.b" }, { a: 5 }],
    [{ var: [["a", "b"]] }, { "a,b": 1 }],
    [{ var: "1" }, "abc"],
    [{ var: "x" }, "abc"],
    [{ var: "length" }, [1, 2]],
    [{ var: "items.1.sku" }, { items }],
    [{ var: "customer.address.country" }, { customer: { address: { country: "PT" } } }],
    [{ var: { cat: ["customer", ".", "tier"] } }, { customer: { tier: "gold" } }],
    [{ var: "big" }, { big: 9007199254740991 }],
  ]],
  ["missing and missing_some count null and \"\" as missing", [
    [{ missing: ["a"] }, { a: "" }],
    [{ missing: ["a"] }, { a: 0 }],
    [{ missing: ["a"] }, { a: false }],
    [{ missing: ["a"] }, { a: [] }],
    [{ missing: ["a"] }, { a: null }],
    [{ missing: [["a", "b"], "c"] }, {}],
    [{ missing: [1] }, [5, 6]],
    [{ missing: [1] }, ["x"]],
    [{ missing: { var: "keys" } }, { keys: ["a", "b"], a: 1 }],
    [{ missing: [[["a", "dflt"]]] }, {}],
    [{ missing: ["a.b.c"] }, { a: { b: { c: "" } } }],
    [{ missing_some: [0, ["a"]] }, {}],
    [{ missing_some: [1, []] }, {}],
    [{ missing_some: [2, ["a", "b"]] }, { a: 1 }],
    [{ missing_some: ["1", ["a", "b"]] }, { b: 1 }],
    [{ missing_some: [1, "a"] }, { a: 1 }],
    [{ missing_some: [1, "a"] }, {}],
    [{ missing_some: [1, [["a", "b"]]] }, { b: 1 }],
    [{ missing_some: [1, 5] }, {}],
  ]],
  ["and/or return a value, not a boolean; with no arguments, undefined (null)", [
    [{ and: [] }, null],
    [{ or: [] }, null],
    [{ or: [0, "", null] }, null],
    [{ and: [1, "a", [1]] }, null],
    [{ or: [{ var: "nickname" }, { var: "name" }] }, { name: "Ana" }],
  ]],
  ["Arrays with logic are evaluated; objects with several keys are data", [
    [[[{ var: "a" }], { var: "b" }], { a: 1, b: 2 }],
    [{ map: [[1, 2], { and: [] }] }, null],
    [{ a: { var: "x" }, b: 1 }, { x: 5 }],
    [{ if: [true, { a: 1, b: { var: "x" } }] }, { x: 5 }],
    [{}, null],
    [{ "!!": [{ a: 1, b: { var: "x" } }] }, { x: 0 }],
  ]],
  ["all of [] is false, none of [] is true, some of [] is false; non-arrays count as []", [
    [{ all: [[], true] }, null],
    [{ none: [[], true] }, null],
    [{ some: [[], true] }, null],
    [{ all: ["abc", true] }, null],
    [{ none: ["abc", true] }, null],
    [{ some: [[0, 0], { var: "" }] }, null],
    [{ all: [[1, 2], { var: "" }] }, null],
    [{ some: [{ var: "x" }, true] }, {}],
  ]],
  ["map, filter, reduce", [
    [{ filter: [{ var: "items" }, { ">": [{ var: "qty" }, 1] }] }, { items }],
    [{ map: ["abc", 1] }, null],
    [{ filter: [[0, 1, "", [], "0", {}], { var: "" }] }, null],
    [{ map: [[[1, 2], [3]], { var: "length" }] }, null],
    [{ map: [[1, 2, 3], { var: "accumulator" }] }, null],
    [{ reduce: ["abc", 1, 7] }, null],
    [{ reduce: [[1, 2, 3], { var: "accumulator" }] }, null],
    [{ reduce: [[1, 2, 3], { "+": [{ var: "accumulator" }, { var: "current" }] }] }, null],
    [{ reduce: [[1, 2], { var: "" }, 0] }, null],
    [{ reduce: [[1, 2, 3], { cat: [{ var: "accumulator" }, { var: "current" }] }, ""] }, null],
    [{ reduce: [{ var: "items" }, { "+": [{ var: "accumulator" }, { "*": [{ var: "current.qty" }, { var: "current.price" }] }] }, 0] }, { items }],
    [{ reduce: [[], { var: "current" }, { var: "start" }] }, { start: 7 }],
  ]],
  ["log returns its argument", [
    [{ log: "apple" }, null],
    [{ log: [[1, 2]] }, null],
    [{ log: { var: "a" } }, { a: { b: 1 } }],
  ]],
];

// JSON.stringify writes a lone surrogate as a \udXXX escape (pairs it writes as they are).
function hasLoneSurrogate(json) {
  return /\\ud[89a-f][0-9a-f]{2}/i.test(json);
}

const out = [];
let count = 0;
for (const [title, cases] of sections) {
  out.push(JSON.stringify(title));
  for (const [rule, data] of cases) {
    let result;
    try {
      result = jsonLogic.apply(rule, data);
    } catch (e) {
      throw new Error(`json-logic-js throws on ${JSON.stringify(rule)}: ${e.message}`);
    }
    const text = JSON.stringify(result === undefined ? null : result);
    if (hasLoneSurrogate(text)) {
      throw new Error(`result of ${JSON.stringify(rule)} holds a lone surrogate: ${text}`);
    }
    out.push(`[${JSON.stringify(rule)}, ${JSON.stringify(data)}, ${text}]`);
    count += 1;
  }
}
process.stdout.write("[\n" + out.join(",\n") + "\n]\n");
process.stderr.write(`${count} cases\n`);
