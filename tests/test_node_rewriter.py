"""The Node worker's source rewriting, at the parser level (no pool, no session).

`node_worker.js` rewrites a cell before V8 compiles it: top-level `let`/`const`/`class` become
re-runnable declarations (`rewriteForScript`), and a cell with a top-level `await` becomes an
async function whose last expression is returned (`rewriteForAsync`). Both stand on its own
tokenizer and statement analyser. `compileCell` falls back to the cell as written when a
rewrite does not compile, which would hide a rewriting bug end to end, so each rewrite is fed
here on its own, through a one-shot `node` that `require`s the worker (it exports these
functions when it is not run as the worker):

- the rewritten code must parse (`new vm.Script`);
- run in a fresh context, it must give the value the cell gives as Node runs it, and run a
  second time in the same context (a re-run cell) it must give that value again;
- the cell's own value is checked too: `expected` is what Node's REPL shows for the cell.

Why the worker keeps a scanner of its own rather than a maintained parser: see the comment
above "Source rewriting" in node_worker.js.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

WORKER = Path(__file__).resolve().parent.parent / "remote_kernel" / "pool" / "workers" / "node_worker.js"

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")

# (cell, the value it ends with as JSON, or NO_VALUE when it ends with none: a declaration, a loop)
NO_VALUE = "undefined"
SCRIPT_CELLS: list[tuple[str, object]] = [
    # declarations, re-runnable
    ("let a = 1; a", 1),
    ("const b = 2\nb", 2),
    ("let c = 1, d = c + 1; [c, d]", [1, 2]),
    ("const {e, f: [g]} = {e: 1, f: [2]}; e + g", 3),
    ("const [h, ...rest] = [1, 2, 3]; rest", [2, 3]),
    ("let {i = 5} = {}; i", 5),
    ("class K { m() { return 7 } }\nnew K().m()", 7),
    ("class L extends Array { get size() { return this.length } }\nL.from([1, 2]).size", 2),
    ("class M { static #n = 4; static get n() { return M.#n } }\nM.n", 4),
    ("function fn() { let inner = 1; return inner }\nfn()", 1),
    ("let x = 1\nlet y = x + 1\nconst z = y * 2\nz", 4),
    # `let` where it is a name, not a declaration
    ("var let_ = 1; let_", 1),
    ("for (let k = 0; k < 3; k++) {}\n'loop'", "loop"),
    ("{ let block = 1 }\n'block'", "block"),
    ("if (true) { const inIf = 2 }\n'if'", "if"),
    # strings, templates and comments that hold what looks like code
    ("const s = 'let q = 1; const w = 2'; s.length", 22),
    ('const t = "class X {}"; t', "class X {}"),
    ("const u = `let ${'v'} = ${1 + 1}`; u", "let v = 2"),
    ("const nested = `a${`b${`c${1}`}`}`; nested", "abc1"),
    ("const braces = `${ {a: 1}.a }}{`; braces", "1}{"),
    ("// let commented = 1\nconst real = 2; real", 2),
    ("/* const c2 = 1; */ let after = 3; after", 3),
    ("const url = 'http://x/*y*/'; url", "http://x/*y*/"),
    # regular expressions and divisions
    ("const re = /let [a-z]+ = \\/\\d+/g; re.source", "let [a-z]+ = \\/\\d+"),
    ("const cls = /[/]/.test('/'); cls", True),
    ("const n1 = 10, n2 = 2, n3 = 5; n1 / n2 / n3", 1),
    ("const arr = [4]; arr[0] / 2", 2),
    ("const fdiv = (6) / 3; fdiv", 2),
    ("let cnt = 1; cnt++ / 1", 1),
    ("const rx = 'a/b'.split(/\\//); rx", ["a", "b"]),
    ("const tr = typeof /x/; tr", "object"),
    # automatic semicolon insertion
    ("let asi = 1\nconst asi2 = asi\n+ 1\nasi2", 2),
    ("const noSemi = 5\n;[noSemi].length", 1),
    ("let ret = (() => {\n  return\n  1\n})(); ret === undefined", True),
    ("const chain = [1, 2]\n  .map((v) => v * 2)\n  .join(','); chain", "2,4"),
    # arrows, async functions, generators, labels
    ("const add = (p, q) => p + q; add(1, 2)", 3),
    ("const af = async (p) => p; typeof af", "function"),
    ("async function later() { return 1 }\ntypeof later", "function"),
    ("function* gen() { yield 1; yield 2 }\n[...gen()]", [1, 2]),
    ("outer: for (const o of [1, 2]) { for (;;) { break outer } }\n'labelled'", "labelled"),
    ("const obj = {let: 1, const: 2, class: 3}; obj.let + obj.const + obj.class", 6),
    ("const opt = null; opt?.x ?? 'none'", "none"),
    ("let big = 10n ** 3n; String(big)", "1000"),
    ("const num = 1_000.5e1; num", 10005),
    ("const unicode = 'é'; const café = unicode; café", "é"),
    ("var plain = 1; plain", 1),
    ("var let = 4; let", 4),  # a sloppy script may name a variable `let`
    ("let\nnextLine = 1; nextLine", 1),  # `let` then a name on the next line is a declaration
    ("const div = 4 /2/ 1; div", 2),
    ("const arrowObj = () => ({a: 1}); arrowObj().a", 1),
    ("switch (1) { case 1: { let sw = 1 } }\n'switch'", "switch"),
    ("try { throw 1 } catch { } finally { }\n'try'", "try"),
    ("const getter = {get a() { return 1 }}.a; getter", 1),
    ("let [m1, m2] = [1, 2]; [m2, m1] = [m1, m2]; m1", 2),
    ("const o2 = {}\nconst o3 = 1; o3", 1),
    ("const fnExpr = function named() { const local = 1; return local }; fnExpr()", 1),
    ("const last = 1;", NO_VALUE),
]

# cells with a top-level await: rewriteForAsync; the value is what the cell's promise resolves to
ASYNC_CELLS: list[tuple[str, object]] = [
    ("const v = await Promise.resolve(1); v", 1),
    ("let w = await 2\nw + 1", 3),
    ("const {p, q} = await Promise.resolve({p: 1, q: 2}); p + q", 3),
    ("const [first] = await Promise.all([Promise.resolve(5)]); first", 5),
    ("class Aw { get v() { return 9 } }\nconst aw = await new Aw().v; aw", 9),
    ("function helper() { return 4 }\nawait null; helper()", 4),
    ("const sleep = (ms) => new Promise((r) => setTimeout(r, ms)); await sleep(1); 'slept'", "slept"),
    ("const s2 = `await ${'in'} template`; await s2", "await in template"),
    ("// await in a comment\nconst c3 = await 3; c3", 3),
    ("const re2 = /await/; await re2.test('await')", True),
    ("for (const item of [1]) { await item }\n'looped'", "looped"),
    ("const af2 = async () => await 1; await af2()", 1),
    ("let total = 0\nfor await (const part of [1, 2]) total += part\ntotal", 3),
    ("const obj2 = {await: 1}; await obj2.await", 1),
    ("await Promise.resolve(1);", 1),  # an expression statement: its value, as Node's REPL shows it
    ("const settled = await 1;", NO_VALUE),
    ("let sum = 0; sum += await 1; sum", 1),
    ("class Later {}\nawait 1; typeof Later", "function"),
    ("const awaited = 1; await awaited", 1),
    ("let [aa, bb] = await Promise.resolve([1, 2]); [bb, aa] = [aa, bb]; aa", 2),
    ("const tplAwait = `${await Promise.resolve('x')}y`; tplAwait", "xy"),
]

RUNNER = r"""
const vm = require('node:vm');
const worker = require(process.argv[1]);
const cases = JSON.parse(require('node:fs').readFileSync(0, 'utf8'));
const show = (value) => value === undefined ? 'undefined' : JSON.stringify(value);

(async () => {
  const results = [];
  for (const { code, async: isAsync } of cases) {
    const result = { code };
    try {
      const tokens = worker.tokenize(code);
      const analysis = worker.analyze(tokens);
      result.awaits = Boolean(analysis.topLevelAwait);
      const rewritten = isAsync ? worker.rewriteForAsync(code, tokens, analysis)
                                : worker.rewriteForScript(code, tokens, analysis);
      result.rewritten = rewritten;
      const script = new vm.Script(rewritten, { filename: 'rewritten.js' });  // it must parse
      const context = vm.createContext({ setTimeout });
      const run = async () => {
        const value = script.runInContext(context);
        return show(isAsync ? await value : value);
      };
      result.first = await run();
      result.again = await run();  // a re-run cell: its declarations must not clash with the first run
      if (!isAsync) {  // the cell as Node runs it, in a fresh context: the same value
        result.original = show(new vm.Script(code).runInContext(vm.createContext({ setTimeout })));
      }
    } catch (error) {
      result.error = String(error && error.stack || error);
    }
    results.push(result);
  }
  process.stdout.write(JSON.stringify(results));
})();
"""


def rewrite_all(cells: list[tuple[str, object]], is_async: bool) -> list[dict]:
    cases = [{"code": code, "async": is_async} for code, _ in cells]
    done = subprocess.run(["node", "-e", RUNNER, str(WORKER)], input=json.dumps(cases), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def expected_text(value: object) -> str:
    return value if value == NO_VALUE else json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@pytest.mark.parametrize("is_async, cells", [(False, SCRIPT_CELLS), (True, ASYNC_CELLS)], ids=["script", "await"])
def test_each_rewrite_parses_and_keeps_the_cells_value_on_a_rerun(is_async, cells):
    failures = []
    for (code, value), result in zip(cells, rewrite_all(cells, is_async), strict=True):
        want = expected_text(value)
        problem = (result.get("error")
                   or (result["awaits"] != is_async and f"top-level await seen: {result['awaits']}")
                   or (result["first"] != want and f"value {result['first']}, expected {want}")
                   or (result["again"] != want and f"on a re-run: {result['again']}, expected {want}")
                   or (not is_async and result["original"] != want and f"Node itself gives {result['original']}"))
        if problem:
            failures.append(f"{code!r}\n  rewritten: {result.get('rewritten')!r}\n  {problem}")
    assert not failures, "\n".join(failures)


def test_the_corpus_would_catch_a_rewrite_that_does_not_parse():
    """The runner reports a rewrite V8 refuses (here: a cell that is not JavaScript at all)."""
    [result] = rewrite_all([("let = = 1", NO_VALUE)], False)
    assert "SyntaxError" in result["error"]
