'use strict';
/**
 * The Node.js session worker: one persistent JavaScript context per session (PROTOCOL.md).
 *
 * Commands arrive on fd 3 as JSON lines, replies leave on fd 4, one per execute, in order.
 * Session code runs in this process's own realm (as in Node's REPL), so objects from `require`d
 * modules and from session code share one set of built-ins. A cell is compiled as a script:
 *
 * - Top-level `let`/`const`/`class` become `var` bindings, so they persist and a cell can be run
 *   again without "Identifier has already been declared". (A re-run `const` is reassignable.)
 * - A cell with a top-level `await` runs inside an async function. Its top-level declarations
 *   (and `var`s anywhere outside functions) are hoisted to globals, and its trailing expression
 *   statement is returned, the way Node's REPL does it. The rewrite is token-based and keeps
 *   every line where it was, so line numbers in stack traces match the cell.
 * - `$$.async()` makes the execution wait for `$$.done(value)`; `value` becomes the result.
 *
 * Interrupts: an interrupt command on the command pipe ends a pending `$$.async()` or top-level
 * `await`; the SIGINT the pool sends a moment later stops synchronous cell code (vm
 * `breakOnSigint`). A busy loop that runs later, in a callback or after an `await`, cannot be
 * interrupted: the pool's grace period ends it by killing the session. (SIGINT alone is not
 * enough: one that lands as a cell's synchronous part ends is lost, or kills the worker.)
 * `process.exit(code)` ends the execution (code 0: success) instead of the worker.
 * Output written while no execution runs (late callbacks) goes to fd 1/2, the pool's debug log.
 */

const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');
const readline = require('node:readline');
const util = require('node:util');
const vm = require('node:vm');
const { Console } = require('node:console');
const { builtinModules, createRequire } = require('node:module');
const { performance } = require('node:perf_hooks');

const COMMANDS_FD = 3;
const REPLIES_FD = 4;
const MAX_OUTPUT = parseLimit(process.env.REMOTE_KERNEL_MAX_OUTPUT, 1048576);
const COALESCE_MS = 10; // live output waits at most this long for more before it is sent ...
const COALESCE_BYTES = 64 * 1024; // ... unless this much is waiting
const WORKER_FILE = __filename;
const INTERRUPTED = 'Script execution was interrupted by `SIGINT`'; // Node's REPL's words (see interrupt())

// The worker's own references, taken before session code can replace them.
const realExit = process.exit.bind(process);
const inspect = util.inspect;
const jsonStringify = JSON.stringify;
const jsonParse = JSON.parse;

function parseLimit(text, fallback) {
  const value = Number.parseInt(text, 10);
  return Number.isFinite(value) && value >= 0 ? value : fallback;
}

// ---------------------------------------------------------------------------------------------
// Output capture

// Where the middle marker of a truncated stream says all of the output can be had.
const WHOLE_OUTPUT = "To get all of it, write it to a file in /mnt/data (`fs.writeFileSync('out.txt', text)`) "
  + 'and `%download out.txt`';

/**
 * One stream of one execution, in bounded memory: past `limit` UTF-8 bytes it keeps a head (about
 * half the limit, ending at a line end unless its last line is longer than a sixteenth of it) and a tail (the rest
 * of the limit: a ring of the last writes), and `text()` puts a line between them saying how much
 * was left out and how to get all of it. Text that ends the execution (an error's stack) follows.
 */
class StreamCapture {
  /** `onKept(text)`, when given, also receives what goes to the head (live output). */
  constructor(limit, onKept = null) {
    this.limit = limit;
    this.head = [];
    this.headSize = 0;
    this.full = false; // the head is complete: later text goes to the tail
    this.headEndsLine = false;
    this.tail = []; // Buffers, oldest first
    this.tailSize = 0;
    this.total = 0;
    this.final = [];
    this.onKept = onKept;
  }

  /** `live` false: text that ends the execution (an error's stack), kept for the reply only. */
  write(text, live = true) {
    if (!text) return;
    if (!live) {
      this.final.push(utf8Prefix(text, this.limit));
      return;
    }
    let data = Buffer.from(text);
    this.total += data.length;
    if (!this.full) {
      const room = Math.floor(this.limit / 2) - this.headSize;
      if (data.length <= room) {
        this.keepHead(data);
        if (this.onKept) this.onKept(text);
        return;
      }
      const [cut, full] = headCut(data, room, room + Math.floor(this.limit / 16), this.headEndsLine);
      const kept = data.subarray(0, cut);
      this.keepHead(kept);
      this.full = full;
      if (this.onKept && kept.length) this.onKept(kept.toString());
      if (!full) return;
      data = data.subarray(kept.length);
    }
    const room = this.limit - this.headSize; // the tail's share: all the limit leaves over
    if (data.length >= room) {
      this.tail = [];
      this.tailSize = 0;
      data = data.subarray(data.length - room);
    }
    this.tail.push(Buffer.from(data)); // a copy: a slice would keep the whole write alive
    this.tailSize += data.length;
    while (this.tail.length && this.tailSize - this.tail[0].length >= room) this.tailSize -= this.tail.shift().length;
  }

  keepHead(data) {
    if (!data.length) return;
    this.head.push(Buffer.from(data));
    this.headSize += data.length;
    this.headEndsLine = data[data.length - 1] === 0x0a;
  }

  text() {
    const head = Buffer.concat(this.head);
    let tail = Buffer.concat(this.tail);
    tail = tail.subarray(Math.max(tail.length - (this.limit - head.length), 0));
    let text;
    if (head.length + tail.length === this.total) {
      text = Buffer.concat([head, tail]).toString();
    } else {
      let start = tail.subarray(0, Math.floor(tail.length / 4)).indexOf(0x0a) + 1; // from a line's start where one is near ...
      while (start < tail.length && (tail[start] & 0xc0) === 0x80) start += 1; // ... never inside a character
      tail = tail.subarray(start);
      const leftOut = this.total - head.length - tail.length;
      text = head.toString();
      if (text && !text.endsWith('\n')) text += '\n';
      text += `[output truncated: ${leftOut} bytes left out here (the first ${head.length} and the last ${tail.length} `
        + `are shown). ${WHOLE_OUTPUT}]\n${tail.toString()}`;
    }
    return text + this.final.join('');
  }
}

/**
 * How many bytes of `data` (longer than `room`) go to the head, and whether that completes it. The
 * head ends at a line end where it can: through the last one that fits; with none of `data` when
 * there is none and the head already ends a line; else through the end of the line the head is in,
 * up to `stretch` bytes (a later write may end that line). Only a line longer than that is cut, at
 * the room, never inside a character.
 */
function headCut(data, room, stretch, headEndsLine) {
  let fits = Math.max(room, 0);
  let end = fits > 0 ? data.subarray(0, fits).lastIndexOf(0x0a) + 1 : 0;
  if (end || headEndsLine) return [end, true];
  end = data.subarray(0, Math.max(stretch, 0)).indexOf(0x0a, fits) + 1;
  if (end) return [end, true];
  if (data.length <= stretch) return [data.length, false];
  while (fits > 0 && (data[fits] & 0xc0) === 0x80) fits -= 1; // back off continuation bytes
  return [fits, true];
}

/** The longest prefix of `text` that fits in `bytes` UTF-8 bytes without splitting a character. */
function utf8Prefix(text, bytes) {
  const buffer = Buffer.from(text);
  if (buffer.length <= bytes) return text;
  let end = Math.max(bytes, 0);
  while (end > 0 && (buffer[end] & 0xc0) === 0x80) end -= 1; // back off continuation bytes
  return buffer.subarray(0, end).toString();
}

function chunkToText(chunk, encoding) {
  if (typeof chunk === 'string') {
    return encoding && encoding !== 'utf8' && encoding !== 'utf-8' && Buffer.isEncoding(encoding)
      ? Buffer.from(chunk, encoding).toString()
      : chunk;
  }
  if (ArrayBuffer.isView(chunk)) return Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength).toString();
  return String(chunk);
}

/** Route `process.stdout/stderr.write` to the running execution; to fd 1/2 while idle. */
function captureProcessStream(stream, which) {
  const original = stream.write.bind(stream);
  stream.write = function write(chunk, encoding, callback) {
    if (typeof encoding === 'function') {
      callback = encoding;
      encoding = undefined;
    }
    const execution = current;
    if (!execution) return original(chunk, encoding, callback);
    execution[which].write(chunkToText(chunk, encoding));
    if (typeof callback === 'function') process.nextTick(callback);
    return true;
  };
}

// ---------------------------------------------------------------------------------------------
// Source rewriting: a tokenizer, a top-level statement splitter, and the two rewrites.
//
// Why a scanner of our own rather than a maintained parser (issue 18, checked on Node 20.20):
// - Node's public modules expose no parser. `repl` exports start/REPLServer/isValidSyntax; its
//   top-level await rewrite (lib/internal/repl/await.js) runs on the acorn that Node bundles as
//   an internal dependency, unreachable without --expose-internals. `vm` compiles but does not
//   parse for us, and `importModuleDynamically` only serves `import()`.
// - V8's own REPL mode does both jobs natively (let/const/class re-declared across evaluations,
//   top-level await): `node:inspector`'s Session.post('Runtime.evaluate', {replMode: true}).
//   Measured here: ~0.9 ms per evaluation through the inspector protocol, against ~0.4 ms for
//   this path (tokenize + analyse + rewrite + vm.Script) under the same load; the pool's warm
//   round trip is ~1 ms, so it would roughly double a small cell's cost, and interrupts, syntax
//   error positions and the result value would move to the inspector too. The best-kept
//   replacement, and a change of its own (it removes this section), not a refactor.
// - acorn cannot be a dependency of a pip-installed package (no npm at install or run time);
//   vendoring its single-file dist (~230 KB, MIT) works, but adds a copy to update by hand,
//   its load to each Node session's start, and a rewrite of the two rewriters on its AST.
// So this scanner stays, covered at the parser level by tests/test_node_rewriter.py (each rewrite
// must parse and keep the cell's value, run twice) as well as end to end (tests/test_node_worker.py).

const PUNCTUATORS = [
  '>>>=', '...', '===', '!==', '**=', '<<=', '>>=', '>>>', '&&=', '||=', '??=',
  '=>', '==', '!=', '<=', '>=', '&&', '||', '??', '?.', '++', '--', '+=', '-=', '*=', '/=',
  '%=', '&=', '|=', '^=', '**', '<<', '>>',
];
const LINE_TERMINATOR = /[\n\r\u2028\u2029]/;
const IDENTIFIER_START = /[A-Za-z_$\\\u0080-\uffff]/;
const IDENTIFIER_PART = /[\w$\\\u0080-\uffff]/;
const NUMBER = /0[xX][\da-fA-F_]+n?|0[oO][0-7_]+n?|0[bB][01_]+n?|(?:\d[\d_]*\.?[\d_]*|\.\d[\d_]*)(?:[eE][+-]?\d[\d_]*)?n?/y;
// After these keywords a `/` starts a regular expression, not a division.
const KEYWORDS_BEFORE_EXPRESSION = new Set([
  'return', 'typeof', 'instanceof', 'in', 'of', 'new', 'delete', 'void', 'throw', 'case', 'do',
  'else', 'yield', 'await', 'extends',
]);

/**
 * Split JavaScript source into tokens {type, value, start, end, nl}; `nl` marks a line break
 * before the token. Types: name, private, num, string, regex, template, punct. A template
 * literal with substitutions yields template tokens with `head` (starts with a backtick) and
 * `tail` (ends with one) flags around the substitutions' own tokens. Tolerates invalid input.
 */
function tokenize(src) {
  const tokens = [];
  const braces = []; // for each open `{`: true when it is a template substitution `${`
  const n = src.length;
  let i = 0;
  let nl = false;
  const push = (token) => {
    token.nl = nl;
    nl = false;
    tokens.push(token);
  };
  if (src.startsWith('#!')) while (i < n && !LINE_TERMINATOR.test(src[i])) i += 1;
  while (i < n) {
    const c = src[i];
    if (LINE_TERMINATOR.test(c)) {
      nl = true;
      i += 1;
      continue;
    }
    if (/\s/.test(c)) {
      i += 1;
      continue;
    }
    const start = i;
    if (c === '/' && src[i + 1] === '/') {
      while (i < n && !LINE_TERMINATOR.test(src[i])) i += 1;
      continue;
    }
    if (c === '/' && src[i + 1] === '*') {
      const close = src.indexOf('*/', i + 2);
      i = close < 0 ? n : close + 2;
      if (LINE_TERMINATOR.test(src.slice(start, i))) nl = true;
      continue;
    }
    if (c === '"' || c === "'") {
      i += 1;
      while (i < n && src[i] !== c && !LINE_TERMINATOR.test(src[i])) i += src[i] === '\\' ? 2 : 1;
      i = Math.min(i + 1, n);
      push({ type: 'string', value: src.slice(start, i), start, end: i });
      continue;
    }
    if (c === '`' || (c === '}' && braces[braces.length - 1] === true)) {
      if (c === '}') braces.pop();
      const scanned = scanTemplate(src, i + 1);
      i = scanned.end;
      if (scanned.opensSubstitution) braces.push(true);
      push({
        type: 'template', value: src.slice(start, i), start, end: i,
        head: c === '`', tail: !scanned.opensSubstitution,
      });
      continue;
    }
    if (c === '/') {
      const regexEnd = regexAllowedAfter(tokens[tokens.length - 1]) ? scanRegex(src, i) : -1;
      if (regexEnd > 0) {
        i = regexEnd;
        push({ type: 'regex', value: src.slice(start, i), start, end: i });
        continue;
      }
    }
    if (/\d/.test(c) || (c === '.' && /\d/.test(src[i + 1] || ''))) {
      NUMBER.lastIndex = i;
      const match = NUMBER.exec(src);
      i += match ? match[0].length : 1;
      push({ type: 'num', value: src.slice(start, i), start, end: i });
      continue;
    }
    if (IDENTIFIER_START.test(c) || (c === '#' && IDENTIFIER_START.test(src[i + 1] || ''))) {
      i += 1;
      while (i < n && IDENTIFIER_PART.test(src[i])) i += src[i] === '\\' ? 2 : 1;
      const value = src.slice(start, i);
      push({ type: c === '#' ? 'private' : 'name', value, start, end: i });
      continue;
    }
    let value = PUNCTUATORS.find((p) => src.startsWith(p, i)) || c;
    if (value === '?.' && /\d/.test(src[i + 2] || '')) value = '?'; // `a?.5:b` is a conditional
    i += value.length;
    if (value === '{') braces.push(false);
    else if (value === '}') braces.pop();
    push({ type: 'punct', value, start, end: i });
  }
  return tokens;
}

/** Scan template text from `i` (just after a backtick or a substitution's `}`). */
function scanTemplate(src, i) {
  while (i < src.length) {
    if (src[i] === '\\') i += 2;
    else if (src[i] === '`') return { end: i + 1, opensSubstitution: false };
    else if (src[i] === '$' && src[i + 1] === '{') return { end: i + 2, opensSubstitution: true };
    else i += 1;
  }
  return { end: src.length, opensSubstitution: false };
}

/** The end of a regular expression literal starting at `i`, or -1 when there is none. */
function scanRegex(src, i) {
  let inClass = false;
  for (let j = i + 1; j < src.length; j += 1) {
    const c = src[j];
    if (LINE_TERMINATOR.test(c)) return -1;
    if (c === '\\') j += 1;
    else if (c === '[') inClass = true;
    else if (c === ']') inClass = false;
    else if (c === '/' && !inClass) {
      let end = j + 1;
      while (end < src.length && IDENTIFIER_PART.test(src[end])) end += 1;
      return end;
    }
  }
  return -1;
}

function regexAllowedAfter(token) {
  if (!token) return true;
  if (token.type === 'name') return KEYWORDS_BEFORE_EXPRESSION.has(token.value);
  if (token.type === 'punct') return ![')', ']', '++', '--'].includes(token.value);
  if (token.type === 'template') return !token.tail;
  return false;
}

const isPunct = (token, value) => !!token && token.type === 'punct' && token.value === value;
const isName = (token, value) => !!token && token.type === 'name' && token.value === value;

// Tokens that, at the start of a new line, continue the expression of the previous line.
const CONTINUING_PUNCTUATORS = new Set([
  '.', '?.', '(', '[', ',', '?', ':', '=', '==', '===', '!=', '!==', '<', '>', '<=', '>=', '+',
  '-', '*', '/', '%', '**', '&', '|', '^', '&&', '||', '??', '<<', '>>', '>>>', '+=', '-=', '*=',
  '/=', '%=', '**=', '&=', '|=', '^=', '<<=', '>>=', '>>>=', '&&=', '||=', '??=', '=>',
]);
const CONTINUING_NAMES = new Set(['in', 'instanceof', 'else', 'catch', 'finally']);
// Keywords that cannot end a statement: what follows them, even on the next line, belongs to it.
const KEYWORDS_NEEDING_MORE = new Set([
  'new', 'delete', 'typeof', 'void', 'in', 'instanceof', 'extends', 'case', 'await', 'yield',
  'var', 'let', 'const', 'else', 'do', 'try', 'finally', 'function', 'class', 'return', 'throw',
]);
const BLOCK_HEADS = new Set(['if', 'for', 'while', 'switch', 'catch', 'with']);
const BLOCKISH_STARTS = new Set(['if', 'for', 'while', 'do', 'try', 'switch', 'with', 'function', 'class']);
const NON_EXPRESSION_STARTS = new Set([
  'var', 'const', 'function', 'class', 'if', 'for', 'while', 'do', 'try', 'switch', 'with',
  'return', 'throw', 'break', 'continue', 'debugger', 'export',
]);

/** Whether a line break between `prev` and `next` leaves them in one statement (no ASI). */
function continuesAcrossLine(prev, next) {
  if (next.type === 'punct' && CONTINUING_PUNCTUATORS.has(next.value)) return true;
  if (next.type === 'template' && next.head) return true; // a tagged template
  if (next.type === 'name' && CONTINUING_NAMES.has(next.value)) return true;
  if (prev.type === 'punct') {
    if (prev.value === ')') return !!prev.closesBlockHead; // `if (x)` ⏎ `body`
    return ![']', '}', '++', '--', ';'].includes(prev.value);
  }
  if (prev.type === 'name') return KEYWORDS_NEEDING_MORE.has(prev.value);
  if (prev.type === 'template') return !prev.tail;
  return false;
}

function startsBlockishStatement(tokens, i) {
  const t = tokens[i];
  if (isPunct(t, '{')) return true;
  if (t.type !== 'name') return false;
  if (BLOCKISH_STARTS.has(t.value)) return true;
  if (t.value === 'async' && isName(tokens[i + 1], 'function') && !tokens[i + 1].nl) return true;
  return isPunct(tokens[i + 1], ':'); // a label
}

/** Net bracket depth change of one token (template pieces count as brackets). */
function depthChange(token) {
  if (token.type === 'punct') {
    if (token.value === '(' || token.value === '[' || token.value === '{') return 1;
    if (token.value === ')' || token.value === ']' || token.value === '}') return -1;
    return 0;
  }
  if (token.type === 'template') return (token.head ? 0 : -1) + (token.tail ? 0 : 1);
  return 0;
}

/**
 * Find the top-level statements (token ranges) and whether an `await` occurs outside every
 * function (a top-level await), and mark each `var` that is outside every function. Sets
 * `close` on opening brackets, `closesBlockHead` on the `)` of `if (…)`-like heads.
 */
function analyze(tokens) {
  const stack = []; // open brackets: {token, kind: 'fn' | 'class' | 'other', head}
  const arrows = []; // stack depths of open concise arrow bodies (`x => expr`)
  const statements = [];
  let functionDepth = 0;
  let pendingClassDepth = -1;
  let statement = null;
  let topLevelAwait = false;

  for (let i = 0; i < tokens.length; i += 1) {
    const t = tokens[i];
    const prev = tokens[i - 1];
    if (stack.length === 0) {
      if (statement && prev && endsStatementBefore(statement, prev, t)) {
        statement.end = i - 1;
        statements.push(statement);
        statement = null;
        arrows.length = 0;
      }
      if (!statement && !isPunct(t, ';')) {
        statement = { start: i, end: -1, first: t, blockish: startsBlockishStatement(tokens, i) };
      }
    }
    // a concise arrow body also ends where a line break ends its statement
    while (t.nl && prev && arrows.length && arrows[arrows.length - 1] === stack.length
           && !continuesAcrossLine(prev, t)) arrows.pop();
    const outsideFunctions = functionDepth === 0 && arrows.length === 0;
    if (t.type === 'punct') {
      switch (t.value) {
        case '(':
        case '[':
          stack.push({ token: t, kind: 'other', head: prev, beforeHead: tokens[i - 2] });
          break;
        case '{': {
          let kind = 'other';
          if (pendingClassDepth === stack.length) kind = 'class';
          else if (isPunct(prev, '=>')) kind = 'fn';
          else if (isPunct(prev, ')')) kind = prev.closesBlockHead ? 'other' : 'fn';
          if (kind === 'class') pendingClassDepth = -1;
          if (kind !== 'other') functionDepth += 1;
          stack.push({ token: t, kind });
          break;
        }
        case ')':
        case ']':
        case '}': {
          const open = stack.pop();
          if (open) {
            open.token.close = i;
            if (open.kind !== 'other') functionDepth -= 1;
            if (t.value === ')' && open.head && open.head.type === 'name'
                && (BLOCK_HEADS.has(open.head.value)
                    || (open.head.value === 'await' && isName(open.beforeHead, 'for')))) {
              t.closesBlockHead = true;
            }
          }
          while (arrows.length && arrows[arrows.length - 1] > stack.length) arrows.pop();
          break;
        }
        case ',':
        case ';':
          while (arrows.length && arrows[arrows.length - 1] === stack.length) arrows.pop();
          if (t.value === ';' && stack.length === 0 && statement) {
            statement.end = i;
            statements.push(statement);
            statement = null;
          }
          break;
        case '=>':
          if (!isPunct(tokens[i + 1], '{')) arrows.push(stack.length);
          break;
        default:
      }
    } else if (t.type === 'template') {
      if (!t.head) stack.pop();
      if (!t.tail) stack.push({ token: t, kind: 'other' });
    } else if (t.type === 'name' && !isPunct(prev, '.') && !isPunct(prev, '?.')) {
      if (t.value === 'class') pendingClassDepth = stack.length;
      else if (t.value === 'await' && outsideFunctions && !isPunct(tokens[i + 1], ':')) topLevelAwait = true;
      else if (t.value === 'var' && outsideFunctions) t.outsideFunctions = true;
    }
  }
  if (statement) {
    statement.end = tokens.length - 1;
    statements.push(statement);
  }
  return { statements, topLevelAwait };
}

function endsStatementBefore(statement, prev, next) {
  if (isPunct(prev, '}') && statement.blockish) {
    return !(next.type === 'name' && (['else', 'catch', 'finally'].includes(next.value)
      || (next.value === 'while' && isName(statement.first, 'do'))));
  }
  return next.nl && !continuesAcrossLine(prev, next);
}

/** The declaration a top-level statement makes: {kind, names, ...}, or null. */
function declarationOf(tokens, statement) {
  const i = statement.start;
  const first = tokens[i];
  if (first.type !== 'name') return null;
  const next = tokens[i + 1];
  if (first.value === 'var' || first.value === 'const'
      || (first.value === 'let' && next && (next.type === 'name' || isPunct(next, '[') || isPunct(next, '{')))) {
    return { kind: first.value, keyword: first, declarators: parseDeclarators(tokens, i + 1, statement.end + 1) };
  }
  let j = i;
  if (first.value === 'async' && isName(next, 'function') && !next.nl) j += 1;
  if (isName(tokens[j], 'function')) {
    if (isPunct(tokens[j + 1], '*')) j += 1;
    const name = tokens[j + 1];
    return name && name.type === 'name' ? { kind: 'function', names: [name.value] } : null;
  }
  if (first.value === 'class' && next && next.type === 'name' && next.value !== 'extends') {
    for (let k = i + 2; k <= statement.end; k += 1) { // the body is the first `{` not nested
      if (isPunct(tokens[k], '{')) {
        return tokens[k].close === undefined ? null : { kind: 'class', names: [next.value], bodyEnd: tokens[tokens[k].close] };
      }
      if (['(', '['].includes(tokens[k].value) && tokens[k].close !== undefined) k = tokens[k].close;
    }
  }
  return null;
}

/**
 * Parse `a = 1, {b, c: [d]} = e, f` from token `i` up to `limit`: each declarator's bound names,
 * its last pattern token and whether it has an initializer.
 */
function parseDeclarators(tokens, i, limit) {
  const declarators = [];
  while (i < limit) {
    const names = [];
    const patternStart = i;
    i = parsePattern(tokens, i, limit, names);
    if (i <= patternStart) break;
    const declarator = { names, patternEnd: tokens[i - 1], hasInitializer: isPunct(tokens[i], '=') };
    declarators.push(declarator);
    if (declarator.hasInitializer) i = skipExpression(tokens, i + 1, limit);
    if (!isPunct(tokens[i], ',')) break;
    i += 1;
  }
  return declarators;
}

/** Collect the names a binding pattern at `i` binds; return the index after it. */
function parsePattern(tokens, i, limit, names) {
  const t = tokens[i];
  if (!t || i >= limit) return i;
  if (t.type === 'name') {
    names.push(t.value);
    return i + 1;
  }
  const end = t.close;
  if (end === undefined || end >= limit) return i;
  if (isPunct(t, '[')) {
    let j = i + 1;
    while (j < end) {
      if (isPunct(tokens[j], ',')) {
        j += 1;
        continue;
      }
      if (isPunct(tokens[j], '...')) j += 1;
      const after = parsePattern(tokens, j, end, names);
      j = after > j ? after : j + 1;
      if (isPunct(tokens[j], '=')) j = skipExpression(tokens, j + 1, end);
      if (isPunct(tokens[j], ',')) j += 1;
    }
    return end + 1;
  }
  if (isPunct(t, '{')) {
    let j = i + 1;
    while (j < end) {
      if (isPunct(tokens[j], '...')) {
        j = Math.max(parsePattern(tokens, j + 1, end, names), j + 2);
      } else {
        const key = tokens[j];
        j = isPunct(key, '[') && key.close !== undefined ? key.close + 1 : j + 1;
        if (isPunct(tokens[j], ':')) {
          const after = parsePattern(tokens, j + 1, end, names);
          j = after > j + 1 ? after : j + 2;
        } else if (key.type === 'name') {
          names.push(key.value);
        }
        if (isPunct(tokens[j], '=')) j = skipExpression(tokens, j + 1, end);
      }
      while (j < end && !isPunct(tokens[j], ',')) j += 1; // tolerate what we did not understand
      j += 1;
    }
    return end + 1;
  }
  return i;
}

/** Skip an assignment expression from `i`: stop at a `,` or `;` outside brackets, or at ASI. */
function skipExpression(tokens, i, limit) {
  let depth = 0;
  for (; i < limit; i += 1) {
    const t = tokens[i];
    if (depth === 0) {
      if (isPunct(t, ',') || isPunct(t, ';')) return i;
      if (t.nl && i > 0 && !continuesAcrossLine(tokens[i - 1], t)) return i;
    }
    depth += depthChange(t);
    if (depth < 0) return i;
  }
  return limit;
}

/** Whether a top-level statement is an expression statement (its value is the cell's value). */
function isExpressionStatement(tokens, statement) {
  const first = tokens[statement.start];
  if (isPunct(first, '{') || isPunct(first, ';')) return false;
  if (first.type !== 'name') return true;
  if (NON_EXPRESSION_STARTS.has(first.value)) return false;
  if (first.value === 'let' || first.value === 'import') {
    const next = tokens[statement.start + 1];
    return !next || !(next.type === 'name' || next.type === 'string' || isPunct(next, '[') || isPunct(next, '{'));
  }
  return !startsBlockishStatement(tokens, statement.start);
}

/** Apply non-overlapping edits {at, remove, insert, order} to `src` in one pass. */
function applyEdits(src, edits) {
  edits.sort((a, b) => a.at - b.at || a.order - b.order);
  const pieces = [];
  let from = 0;
  for (const edit of edits) {
    pieces.push(src.slice(from, edit.at), edit.insert);
    from = edit.at + (edit.remove || 0);
  }
  pieces.push(src.slice(from));
  return pieces.join('');
}

/**
 * Rewrite a cell for a script (no top-level await): top-level `let`/`const` → `var`,
 * `class C {…}` → `var C = class C {…};`. The script's completion value is the cell's value.
 */
function rewriteForScript(src, tokens, analysis) {
  const edits = [];
  for (const statement of analysis.statements) {
    const declaration = declarationOf(tokens, statement);
    if (!declaration) continue;
    if (declaration.kind === 'let' || declaration.kind === 'const') {
      edits.push({ at: declaration.keyword.start, remove: declaration.keyword.value.length, insert: 'var', order: 0 });
    } else if (declaration.kind === 'class') {
      const name = declaration.names[0];
      edits.push({ at: tokens[statement.start].start, insert: `var ${name} = `, order: 0 });
      edits.push({ at: declaration.bodyEnd.end, insert: ';', order: 0 });
    }
  }
  return applyEdits(src, edits);
}

/**
 * Rewrite a cell with a top-level await into `var <names>; (async () => {…})()`: declarations
 * become assignments to hoisted globals, functions are copied to globals, and the trailing
 * expression statement is returned.
 */
function rewriteForAsync(src, tokens, analysis) {
  const edits = [];
  const hoisted = new Set();
  const functions = [];
  const hoist = (names) => names.forEach((name) => hoisted.add(name));
  const topLevelVars = new Set();
  for (const statement of analysis.statements) {
    const declaration = declarationOf(tokens, statement);
    if (!declaration) continue;
    if (declaration.kind === 'function') {
      hoist(declaration.names);
      functions.push(declaration.names[0]);
    } else if (declaration.kind === 'class') {
      const name = declaration.names[0];
      hoist([name]);
      edits.push({ at: tokens[statement.start].start, insert: `${name} = `, order: 0 });
      edits.push({ at: declaration.bodyEnd.end, insert: ';', order: 0 });
    } else {
      topLevelVars.add(declaration.keyword);
      edits.push({ at: declaration.keyword.start, remove: declaration.keyword.value.length, insert: '0,', order: 0 });
      for (const declarator of declaration.declarators) {
        hoist(declarator.names);
        if (!declarator.hasInitializer && declaration.kind !== 'var') {
          edits.push({ at: declarator.patternEnd.end, insert: ' = undefined', order: 0 });
        }
      }
    }
  }
  // `var` inside top-level blocks and loops is global too.
  tokens.forEach((t, i) => {
    if (!t.outsideFunctions || topLevelVars.has(t)) return;
    const inForHead = isPunct(tokens[i - 1], '(')
      && (isName(tokens[i - 2], 'for') || (isName(tokens[i - 2], 'await') && isName(tokens[i - 3], 'for')));
    edits.push({ at: t.start, remove: 3, insert: inForHead ? '' : '0,', order: 0 });
    for (const declarator of parseDeclarators(tokens, i + 1, tokens.length)) hoist(declarator.names);
  });
  const last = analysis.statements[analysis.statements.length - 1];
  if (last && isExpressionStatement(tokens, last)) {
    const lastToken = isPunct(tokens[last.end], ';') ? tokens[last.end - 1] : tokens[last.end];
    edits.push({ at: tokens[last.start].start, insert: 'return (', order: 1 });
    edits.push({ at: lastToken.end, insert: ')', order: 0 });
  }
  const declare = hoisted.size ? `var ${[...hoisted].join(', ')}; ` : '';
  const exportFunctions = functions.map((name) => `globalThis[${jsonStringify(name)}] = ${name}; `).join('');
  return `${declare}(async () => { ${exportFunctions}${applyEdits(src, edits)}\n})()`;
}

/**
 * Compile a cell. Candidates are tried in order and the first that compiles wins; when none
 * does, the error reported is the one of the cell as written (in its async form if it awaits).
 */
function compileCell(src, filename) {
  const options = { filename, importModuleDynamically: dynamicImport };
  const compile = (code) => new vm.Script(code, options);
  const tokens = tokenize(src);
  const analysis = analyze(tokens);
  const asIs = { code: src, isAsync: false };
  const asyncAsIs = { code: `${ASYNC_PREFIX}${src}\n})()`, isAsync: true };
  const candidates = [];
  if (analysis.topLevelAwait) candidates.push({ code: rewriteForAsync(src, tokens, analysis), isAsync: true });
  if (/^\s*{/.test(src) && !/;\s*$/.test(src)) candidates.push({ code: `(${src}\n)`, isAsync: false });
  candidates.push({ code: rewriteForScript(src, tokens, analysis), isAsync: false }, asIs);
  if (analysis.topLevelAwait) candidates.push(asyncAsIs);
  for (const candidate of candidates) {
    try {
      return { script: compile(candidate.code), isAsync: candidate.isAsync };
    } catch {
      // try the next form
    }
  }
  if (analysis.topLevelAwait) {
    try {
      compile(asyncAsIs.code);
    } catch (error) {
      throw relocateSyntaxError(error, src);
    }
  }
  try {
    compile(src); // it failed among the candidates: this throws its own syntax error
  } catch (error) {
    // An await this analysis missed: the async forms are the last resort.
    if (!/\bawait\b/.test(String(error && error.message))) throw error;
    for (const candidate of [{ code: rewriteForAsync(src, tokens, analysis), isAsync: true }, asyncAsIs]) {
      try {
        return { script: compile(candidate.code), isAsync: true };
      } catch (asyncError) {
        error = relocateSyntaxError(asyncError, src);
      }
    }
    throw error;
  }
}

const ASYNC_PREFIX = '(async () => { ';

/**
 * Point a syntax error of a cell compiled as `(async () => { <cell>\n})()` at the cell itself:
 * V8's "file:line / source line / caret" header would otherwise show the wrapper.
 */
function relocateSyntaxError(error, src) {
  let stack = error && typeof error.stack === 'string' ? error.stack : '';
  const header = /^([^\n]*):(\d+)\n([^\n]*)\n( *)(\^*)\n/.exec(stack);
  if (!header) return error;
  const lines = src.split(/\r\n|[\n\r\u2028\u2029]/);
  let line = Number(header[2]);
  let text = header[3];
  let column = header[4].length;
  let marks = header[5] || '^';
  if (line > lines.length) { // the error is in the wrapper's end: the cell ended too early
    line = lines.length;
    text = lines[line - 1];
    column = text.length;
    marks = '^';
    const message = 'Unexpected end of input';
    stack = stack.replace(`${error.name}: ${error.message}`, `${error.name}: ${message}`);
    error.message = message;
  } else if (line === 1 && text.startsWith(ASYNC_PREFIX)) {
    text = text.slice(ASYNC_PREFIX.length);
    column = Math.max(column - ASYNC_PREFIX.length, 0);
  }
  error.stack = `${header[1]}:${line}\n${text}\n${' '.repeat(column)}${marks}\n${stack.slice(header[0].length)}`;
  return error;
}

const dynamicImport = vm.constants && vm.constants.USE_MAIN_CONTEXT_DEFAULT_LOADER;

// ---------------------------------------------------------------------------------------------
// Results and errors

function isJsonValue(value, ancestors = new Set()) {
  if (value === null || typeof value === 'string' || typeof value === 'boolean') return true;
  if (typeof value === 'number') return Number.isFinite(value);
  if (typeof value !== 'object' || ancestors.has(value) || ancestors.size > 100) return false;
  if (util.types.isProxy(value)) return false;
  ancestors.add(value);
  try {
    if (Array.isArray(value)) {
      if (Object.getPrototypeOf(value) !== Array.prototype || Object.keys(value).length !== value.length) return false;
      return value.every((item) => isJsonValue(item, ancestors));
    }
    const proto = Object.getPrototypeOf(value);
    if ((proto !== Object.prototype && proto !== null) || Object.getOwnPropertySymbols(value).length) return false;
    if ('toJSON' in value) return false;
    return Object.keys(value).every((key) => {
      const descriptor = Object.getOwnPropertyDescriptor(value, key);
      return descriptor && 'value' in descriptor && isJsonValue(descriptor.value, ancestors);
    });
  } finally {
    ancestors.delete(value);
  }
}

function show(value) {
  try {
    return inspect(value, { colors: false });
  } catch (error) {
    return `[value that cannot be shown: ${readMessage(error)}]`;
  }
}

/** The result slot: a JSON value when the value has one, else its inspected text; "" for undefined. */
function resultOf(value, jupyter) {
  if (value === undefined) return '';
  if (!jupyter) {
    try {
      if (isJsonValue(value)) return jsonParse(jsonStringify(value));
    } catch {
      // a getter or proxy trap threw: show the value instead
    }
  }
  return show(value);
}

class ProcessExit extends Error {
  constructor(code) {
    super(`process.exit(${code}) was called`);
    this.name = 'ProcessExit';
    this.code = code;
  }
}

/** `error.message` as text, whatever was thrown: a getter or a proxy trap that throws gives a note. */
function readMessage(error) {
  try {
    return String(error && error.message);
  } catch {
    return '(its message cannot be read)';
  }
}

/** Whether vm stopped the script for a SIGINT (false for anything session code threw that cannot be read). */
function isInterruption(thrown) {
  try {
    return util.types.isNativeError(thrown) && thrown.code === 'ERR_SCRIPT_EXECUTION_INTERRUPTED';
  } catch {
    return false;
  }
}

/** Whether `thrown` is a ProcessExit (false for a proxy whose getPrototypeOf trap throws). */
function isProcessExit(thrown) {
  try {
    return thrown instanceof ProcessExit;
  } catch {
    return false;
  }
}

/**
 * {name, message, text} of a thrown value; `text` is the stack without the worker's frames. It never
 * throws: a thrown value's getters and proxy traps are session code, and must not stop this worker.
 */
function describeThrown(thrown) {
  try {
    return describeThrownValue(thrown);
  } catch {
    const message = 'a thrown value that cannot be described (its getters or proxy traps throw)';
    return { name: 'Error', message, text: `Uncaught ${message}` };
  }
}

function describeThrownValue(thrown) {
  if (isProcessExit(thrown)) return { name: thrown.name, message: thrown.message, text: `${thrown.name}: ${thrown.message}` };
  const message = thrown !== null && (typeof thrown === 'object' || typeof thrown === 'function') ? thrown.message : undefined;
  if (typeof message !== 'string') return { name: 'Uncaught', message: show(thrown), text: `Uncaught ${show(thrown)}` };
  let name = 'Error';
  let stack = '';
  try {
    name = String(thrown.name || (thrown.constructor && thrown.constructor.name) || 'Error');
    stack = typeof thrown.stack === 'string' ? thrown.stack : '';
  } catch {
    // a hostile getter: keep the defaults
  }
  const lines = (stack || `${name}: ${message}`).split('\n');
  const cut = lines.findIndex((line) => /^\s+at /.test(line) && (line.includes(WORKER_FILE) || line.includes('(node:vm:')));
  return { name, message, text: (cut < 0 ? lines : lines.slice(0, cut)).join('\n') };
}

// ---------------------------------------------------------------------------------------------
// Executions

let current = null; // the running Execution, or null while idle
let executionCount = 0;

/** One execute command: its captured streams, its `$$`, and the reply it ends with. */
class Execution {
  constructor(command) {
    this.id = command.id;
    this.jupyter = command.jupyter === true;
    const live = command.live === true;
    this.stdout = new StreamCapture(MAX_OUTPUT, live ? (text) => this.queueLive('stdout', text) : null);
    this.stderr = new StreamCapture(MAX_OUTPUT, live ? (text) => this.queueLive('stderr', text) : null);
    this.pending = []; // live output not sent yet: [name, text], neighbours of one stream merged
    this.pendingSize = 0;
    this.lastSent = 0;
    this.timer = null;
    this.started = performance.now();
    this.topLevelDone = false;
    this.topLevelValue = undefined;
    this.waitsForDone = false;
    this.doneCalled = false;
    this.doneValue = undefined;
    this.finished = false;
    this.replied = new Promise((resolve) => { this.resolveReplied = resolve; });
  }

  /** The `$$` object session code sees during this execution. */
  dollar() {
    const done = (value) => {
      if (this.finished || this.doneCalled) return;
      this.doneCalled = true;
      this.doneValue = value;
      this.finishIfComplete();
    };
    return {
      async: (enable = true) => { if (!this.finished) this.waitsForDone = !!enable; },
      done,
      sendResult: done,
      sendError: (error) => this.fail(error),
    };
  }

  /** Live output (PROTOCOL.md): sent at most COALESCE_MS after it was written, or at 64 KiB. */
  queueLive(name, text) {
    if (this.finished) return;
    const last = this.pending[this.pending.length - 1];
    if (last && last[0] === name) last[1] += text;
    else this.pending.push([name, text]);
    this.pendingSize += text.length;
    // a synchronous loop never lets a timer run: send from here when the last send is old enough
    if (this.pendingSize >= COALESCE_BYTES || performance.now() - this.lastSent >= COALESCE_MS) this.sendLive();
    else if (!this.timer) this.timer = setTimeout(() => this.sendLive(), COALESCE_MS);
  }

  sendLive() {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const pending = this.pending;
    this.pending = [];
    this.pendingSize = 0;
    this.lastSent = performance.now();
    for (const [name, text] of pending) send({ id: this.id, event: 'stream', name, text });
  }

  topLevelCompleted(value) {
    this.topLevelDone = true;
    this.topLevelValue = value;
    this.finishIfComplete();
  }

  finishIfComplete() {
    if (this.finished || !this.topLevelDone || (this.waitsForDone && !this.doneCalled)) return;
    const value = this.doneCalled || this.waitsForDone ? this.doneValue : this.topLevelValue;
    this.finish(true, resultOf(value, this.jupyter), null);
  }

  fail(thrown) {
    if (this.finished) return;
    if (isProcessExit(thrown) && thrown.code === 0) {
      this.finish(true, '', null);
      return;
    }
    const { name, message, text } = describeThrown(thrown);
    this.stderr.write(`${text}\n`, false);
    this.finish(false, '', { name, message });
  }

  /**
   * SIGINT: Node's REPL says "Uncaught Error: Script execution was interrupted by `SIGINT`" (code
   * ERR_SCRIPT_EXECUTION_INTERRUPTED), for a busy loop and an awaited promise alike; the same message,
   * named `Interrupted` (PROTOCOL.md), never Python's KeyboardInterrupt.
   */
  interrupt() {
    if (this.finished) return;
    this.stderr.write(`Interrupted: ${INTERRUPTED}\n`, false);
    this.finish(false, '', { name: 'Interrupted', message: INTERRUPTED });
  }

  finish(ok, result, error) {
    if (this.timer) clearTimeout(this.timer); // what is still queued travels in the reply
    this.timer = null;
    this.pending = [];
    this.finished = true;
    if (current === this) current = null;
    send({
      id: this.id, ok, stdout: this.stdout.text(), stderr: this.stderr.text(), result, error,
      ms: Math.round((performance.now() - this.started) * 1000) / 1000,
    });
    this.resolveReplied();
  }
}

/** Run one execute command; resolves once its reply is written. */
function execute(command) {
  const execution = new Execution(command);
  current = execution;
  executionCount += 1;
  globalThis.$$ = execution.dollar();
  let compiled;
  try {
    compiled = compileCell(String(command.code ?? ''), `cell-${executionCount}`);
  } catch (error) {
    execution.fail(error);
    return execution.replied;
  }
  let value;
  try {
    value = compiled.script.runInThisContext({ breakOnSigint: true, displayErrors: false });
  } catch (error) {
    if (isInterruption(error)) execution.interrupt();
    else execution.fail(error);
    return execution.replied;
  }
  if (compiled.isAsync) {
    value.then((result) => execution.topLevelCompleted(result), (error) => execution.fail(error));
  } else {
    execution.topLevelCompleted(value);
  }
  return execution.replied;
}

// ---------------------------------------------------------------------------------------------
// The session's globals

function installGlobals() {
  const cwd = process.cwd();
  const sessionRequire = createRequire(path.join(cwd, '[session]'));
  const define = (name, value) => Object.defineProperty(globalThis, name, { value, writable: true, configurable: true });
  define('require', sessionRequire);

  // Node's built-in modules as lazily loaded globals, the way Node's REPL offers them.
  for (const name of builtinModules) {
    if (name.startsWith('_') || name.includes('/') || Object.prototype.hasOwnProperty.call(globalThis, name)) continue;
    Object.defineProperty(globalThis, name, {
      get() {
        const value = sessionRequire(name);
        define(name, value);
        return value;
      },
      set(value) {
        define(name, value);
      },
      configurable: true,
    });
  }

  captureProcessStream(process.stdout, 'stdout');
  captureProcessStream(process.stderr, 'stderr');
  define('console', new Console({ stdout: process.stdout, stderr: process.stderr, colorMode: false }));

  process.exit = function exit(code) {
    throw new ProcessExit(code === undefined ? (process.exitCode ?? 0) : code);
  };
}

/** Print process warnings (into the running execution's stderr), except the one about our loader. */
function installWarningPrinter() {
  process.removeAllListeners('warning');
  process.on('warning', (warning) => {
    if (warning.name === 'ExperimentalWarning' && /USE_MAIN_CONTEXT_DEFAULT_LOADER/.test(warning.message)) return;
    process.stderr.write(`(node:${process.pid}) ${warning.name}: ${warning.message}\n`);
  });
}

/** The id of the execution the pool last asked to interrupt (the SIGINT that may follow is for it). */
let interruptAskedFor = null;

function installProcessHandlers() {
  installWarningPrinter();
  const report = (error) => {
    if (current) current.fail(error);
    else process.stderr.write(`uncaught while idle: ${describeThrown(error).text}\n`);
  };
  process.on('uncaughtException', report);
  process.on('unhandledRejection', report);
  // the pool sends a SIGINT just after an interrupt command: when that command named another execution, the
  // SIGINT is that one's, dispatched late (it ended and the next began), and must not end the next one
  process.on('SIGINT', () => {
    if (current && (interruptAskedFor === null || current.id === interruptAskedFor)) current.interrupt();
  });
}

// ---------------------------------------------------------------------------------------------
// The pipe protocol

const sleepCell = new Int32Array(new SharedArrayBuffer(4));

function send(message) {
  let line;
  try {
    line = jsonStringify(message);
  } catch {
    line = jsonStringify({ ...message, result: show(message.result) });
  }
  const data = Buffer.from(`${line}\n`);
  let offset = 0;
  while (offset < data.length) {
    try {
      offset += fs.writeSync(REPLIES_FD, data, offset);
    } catch (error) {
      if (error.code !== 'EAGAIN') realExit(1); // the pool is gone
      Atomics.wait(sleepCell, 0, 0, 2);
    }
  }
}

function openCommands() {
  try {
    return new net.Socket({ fd: COMMANDS_FD, readable: true, writable: false });
  } catch {
    return fs.createReadStream(null, { fd: COMMANDS_FD });
  }
}

/**
 * `{"op": "interrupt", "id"}`: interrupt that execution if it is still the one running, at once
 * (not queued behind it). Read whenever the event loop is free, it ends a cell that awaits; a
 * synchronous part still running gets the pool's SIGINT (vm `breakOnSigint`). A SIGINT alone is
 * not enough: one that lands as a cell's synchronous part ends is lost, or, in the moment vm
 * restores the SIGINT listeners, ends the worker. Returns false for a line that is not one.
 */
function interruptCommand(line) {
  let command;
  try {
    command = jsonParse(line);
  } catch {
    return false;
  }
  if (!command || command.op !== 'interrupt') return false;
  interruptAskedFor = command.id;
  if (current && current.id === command.id) current.interrupt();
  return true;
}

function main() {
  installGlobals();
  installProcessHandlers();
  const queue = [];
  let running = false;
  let closed = false;
  const pump = async () => {
    if (running) return;
    running = true;
    while (queue.length) {
      const line = queue.shift();
      let command;
      try {
        command = jsonParse(line);
      } catch {
        process.stderr.write(`ignored a command that is not JSON: ${line.slice(0, 200)}\n`);
        continue;
      }
      if (command && command.op === 'execute') {
        try {
          await execute(command);
        } catch (error) { // a fault of this worker: the execution fails, the session and its state stay
          if (current && !current.finished) {
            current.fail(new Error(`the session's worker failed: ${readMessage(error)}`));
          }
        }
      } else if (command && command.id !== undefined) {
        send({
          id: command.id, ok: false, stdout: '', stderr: `unknown op: ${command.op}\n`, result: '',
          error: { name: 'ProtocolError', message: `unknown op: ${command.op}` }, ms: 0,
        });
      }
    }
    running = false;
    if (closed) realExit(0);
  };
  const lines = readline.createInterface({ input: openCommands(), crlfDelay: Infinity });
  lines.on('line', (line) => {
    if (line.startsWith('{"op":"interrupt"') && interruptCommand(line)) return;
    if (line.trim()) queue.push(line);
    pump();
  });
  lines.on('close', () => {
    closed = true;
    pump();
  });
  send({ ready: true, runtime: { name: 'node', version: process.versions.node } });
}

if (require.main === module) main();
// required rather than run: the rewriters alone, for their parser-level corpus (tests/test_node_rewriter.py)
else module.exports = { tokenize, analyze, rewriteForScript, rewriteForAsync };
