/**
 * Comments and docs may cite only what the repository holds: a reader of a clone has no specs from outside it. Every
 * docs page and anchor a comment names must exist, so the docs and the comments cannot drift apart unnoticed.
 * Anchors are computed from the markdown headings the way GitHub makes them.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import ts from 'typescript';
import { repoRoot } from './helpers/paths';

const ROOT = repoRoot();
const SOURCE_DIRS = ['src', 'test', 'bench', 'scripts', 'workers'];
const TS_LIKE = new Set(['.ts', '.tsx', '.mts', '.cts', '.js', '.mjs', '.cjs']);
const HASH_COMMENTED = new Set(['.sh', '.bash', '.pl', '.pm', '.py', '.yaml', '.yml']);

/** Names of documents that live outside the repository, and the ways comments used to point at them. */
const OUTSIDE: ReadonlyArray<readonly [RegExp, string]> = [
  [/qpsmtpd-compat/i, 'qpsmtpd-compat (not in the repository): cite docs/compat.md#...'],
  [/contract[- ]notes/i, 'contract notes (not in the repository): cite a docs section or state the fact'],
  [/ipc-dirqueue-format/i, 'ipc-dirqueue-format (not in the repository): cite docs/dirqueue.md#...'],
  [/shared\/specs/i, 'shared/specs (not in the repository): cite a docs section'],
  [/§/, '§ (a section of a document not in the repository): cite docs/NAME.md#anchor'],
  [/\bspec sections?\b/i, '"spec section": cite docs/NAME.md#anchor'],
  [/\bthe spec\b/i, '"the spec": cite docs/NAME.md#anchor'],
];

/** A page under docs/ or README.md, with or without an anchor, as a comment cites it. */
const CITATION = /(?<![\w./-])((?:\.\.\/)*(?:docs\/[\w.-]+|README)\.md)(?:#([\w-]+))?/g;

interface Comment {
  file: string;
  line: number;
  text: string;
}

function walk(dir: string, out: string[] = []): string[] {
  if (!fs.existsSync(dir)) return out;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    if (e.name === 'node_modules' || e.name.startsWith('.')) continue;
    const p = path.join(dir, e.name);
    if (e.isDirectory()) walk(p, out);
    else if (e.isFile()) out.push(p);
  }
  return out;
}

function lineAt(text: string, pos: number): number {
  let n = 1;
  for (let i = text.indexOf('\n'); i >= 0 && i < pos; i = text.indexOf('\n', i + 1)) n++;
  return n;
}

/** Every comment of a TypeScript or JavaScript text, found by the parser, so strings and regexes are not mistaken. */
export function tsComments(file: string, text: string): Comment[] {
  const kind = /\.[cm]?js$/.test(file) ? ts.ScriptKind.JS : ts.ScriptKind.TS;
  const sf = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true, kind);
  const seen = new Set<number>();
  const out: Comment[] = [];
  const add = (ranges: ts.CommentRange[] | undefined): void => {
    for (const r of ranges ?? []) {
      if (seen.has(r.pos)) continue;
      seen.add(r.pos);
      out.push({ file, line: lineAt(text, r.pos), text: text.slice(r.pos, r.end) });
    }
  };
  // getChildren() includes tokens, so a comment in front of a closing brace is found too.
  const visit = (node: ts.Node): void => {
    add(ts.getLeadingCommentRanges(text, node.getFullStart()));
    add(ts.getTrailingCommentRanges(text, node.getEnd()));
    for (const child of node.getChildren(sf)) visit(child);
  };
  add(ts.getLeadingCommentRanges(text, 0));
  visit(sf);
  return out.sort((a, b) => a.line - b.line);
}

/** `#` comments of a shell-like text: a `#` at the start of a line or after white space, to the end of the line. */
export function hashComments(file: string, text: string): Comment[] {
  const out: Comment[] = [];
  text.split('\n').forEach((l, i) => {
    const m = /(?:^|\s)(#.*)$/.exec(l);
    if (m && !(i === 0 && l.startsWith('#!'))) out.push({ file, line: i + 1, text: m[1] });
  });
  return out;
}

function commentsOf(file: string): Comment[] | null {
  const ext = path.extname(file);
  if (TS_LIKE.has(ext)) return tsComments(file, fs.readFileSync(file, 'utf8'));
  if (HASH_COMMENTED.has(ext)) return hashComments(file, fs.readFileSync(file, 'utf8'));
  return null;
}

function rel(file: string): string {
  return path.relative(ROOT, file);
}

/** GitHub's heading anchor: lower case, punctuation other than `-` and `_` dropped, each space a hyphen. */
export function slug(heading: string): string {
  return heading
    .replace(/!?\[([^\]]*)\]\([^)]*\)/g, '$1')
    .replace(/<[^>]+>/g, '')
    .replace(/[`*]/g, '')
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{M}\p{N}\p{Pc}\- ]/gu, '')
    .replace(/ /g, '-');
}

/** The anchors of a markdown text: its ATX headings (outside code blocks), numbered as GitHub does repeats. */
export function anchors(markdown: string): Set<string> {
  const out = new Set<string>();
  const counts = new Map<string, number>();
  let fence: string | null = null;
  for (const line of markdown.split('\n')) {
    const f = /^ {0,3}(`{3,}|~{3,})/.exec(line);
    if (f) {
      if (fence === null) fence = f[1][0];
      else if (f[1][0] === fence) fence = null;
      continue;
    }
    if (fence !== null) continue;
    for (const m of line.matchAll(/<a\s+(?:name|id)="([^"]+)"/g)) out.add(m[1]);
    const h = /^ {0,3}#{1,6}\s+(.*?)(?:\s+#+)?\s*$/.exec(line);
    if (!h) continue;
    const base = slug(h[1]);
    const n = counts.get(base) ?? 0;
    counts.set(base, n + 1);
    out.add(n === 0 ? base : `${base}-${n}`);
  }
  return out;
}

const anchorCache = new Map<string, Set<string>>();
function anchorsOf(file: string): Set<string> {
  let a = anchorCache.get(file);
  if (!a) {
    a = anchors(fs.readFileSync(file, 'utf8'));
    anchorCache.set(file, a);
  }
  return a;
}

/** What is wrong with a citation of `target` (a path from the repository root) and `anchor`; null when it resolves. */
function citationProblem(target: string, anchor: string | undefined): string | null {
  const file = path.join(ROOT, target);
  if (!fs.existsSync(file)) return `${target} does not exist`;
  if (anchor === undefined || anchor === '') return null;
  if (!target.endsWith('.md')) return null;
  const known = anchorsOf(file);
  return known.has(anchor) ? null : `${target} has no heading with anchor #${anchor}`;
}

/** Problems in a list of comments: citations of documents outside the repository, and citations that do not resolve. */
export function commentProblems(comments: readonly Comment[]): string[] {
  const problems: string[] = [];
  for (const c of comments) {
    const where = `${rel(c.file)}:${c.line}`;
    for (const [re, why] of OUTSIDE) if (re.test(c.text)) problems.push(`${where}: ${why}`);
    for (const m of c.text.matchAll(CITATION)) {
      const target = m[1].replace(/^(?:\.\.\/)+/, '');
      const p = citationProblem(target, m[2]);
      if (p) problems.push(`${where}: ${p}`);
    }
  }
  return problems;
}

let scanned: { files: number; comments: Comment[] } | null = null;
function sourceComments(): { files: number; comments: Comment[] } {
  if (scanned) return scanned;
  let files = 0;
  const comments: Comment[] = [];
  for (const d of SOURCE_DIRS) {
    for (const file of walk(path.join(ROOT, d))) {
      const cs = commentsOf(file);
      if (cs === null) continue;
      files++;
      comments.push(...cs);
    }
  }
  scanned = { files, comments };
  return scanned;
}

function markdownFiles(): string[] {
  const docs = walk(path.join(ROOT, 'docs')).filter((f) => f.endsWith('.md'));
  const inSources = SOURCE_DIRS.flatMap((d) => walk(path.join(ROOT, d))).filter((f) => f.endsWith('.md'));
  return [path.join(ROOT, 'README.md'), ...docs, ...inSources];
}

describe('comments cite only what is in the repository', () => {
  test('no comment in src/, test/, bench/, scripts/ or workers/ cites a spec outside the repository', () => {
    const { files, comments } = sourceComments();
    // A scan that found nothing would pass for the wrong reason.
    assert.ok(files > 100 && comments.length > 1000, `only ${files} files and ${comments.length} comments found under ${ROOT}`);
    const problems = commentProblems(comments).filter((p) => !/does not exist|has no heading/.test(p));
    assert.deepEqual(problems, [], `state the fact or cite the docs section:\n${problems.join('\n')}`);
  });

  test('every docs page and anchor a comment cites exists', () => {
    const { comments } = sourceComments();
    const cited = comments.filter((c) => c.text.match(CITATION));
    assert.ok(cited.length > 5, `only ${cited.length} comments cite docs: is CITATION still right?`);
    const problems = commentProblems(comments).filter((p) => /does not exist|has no heading/.test(p));
    assert.deepEqual(problems, [], `fix the citation or the heading:\n${problems.join('\n')}`);
  });

  test('README.md and every markdown page send no reader outside the repository; their links and anchors resolve', () => {
    const problems: string[] = [];
    for (const file of markdownFiles()) {
      const text = fs.readFileSync(file, 'utf8');
      text.split('\n').forEach((l, i) => {
        for (const [re, why] of OUTSIDE) if (re.test(l)) problems.push(`${rel(file)}:${i + 1}: ${why}`);
      });
      for (const m of text.matchAll(/\]\(([^)\s]*)\)/g)) {
        const link = m[1];
        if (/^[a-z][a-z0-9+.-]*:/i.test(link)) continue;
        const [target, anchor] = link.split('#', 2) as [string, string | undefined];
        const resolved = target === '' ? rel(file) : path.relative(ROOT, path.resolve(path.dirname(file), target));
        const p = citationProblem(resolved, anchor);
        if (p) problems.push(`${rel(file)}:${lineAt(text, m.index ?? 0)}: link ${link}: ${p}`);
      }
    }
    assert.deepEqual(problems, [], problems.join('\n'));
  });
});

describe('the checker itself', () => {
  test('anchors are made as GitHub makes them', () => {
    assert.equal(slug('The rcpt_regexp file'), 'the-rcpt_regexp-file');
    assert.equal(slug('`visit_all_jobs()`'), 'visit_all_jobs');
    assert.equal(slug('Queues on disk (IPC::DirQueue 1.1 format)'), 'queues-on-disk-ipcdirqueue-11-format');
    assert.equal(slug('Where spamtrapd departs on purpose'), 'where-spamtrapd-departs-on-purpose');
    assert.equal(slug('A. All traps write into one NFS-shared queue'), 'a-all-traps-write-into-one-nfs-shared-queue');
    assert.equal(slug('Per-job state and the delivery guarantee'), 'per-job-state-and-the-delivery-guarantee');
    const a = anchors('# Title\n## Fields\n```\n## not a heading\n```\n### Fields\n## Closing ##\n');
    assert.deepEqual([...a], ['title', 'fields', 'fields-1', 'closing']);
  });

  test('finds comments anywhere, and only comments', () => {
    const src = [
      '/** see qpsmtpd-compat.md section 2 */',
      "const re = /\\/\\/ the spec/; const s = '// contract-notes'; const t = `/* § */`;",
      'function f() {',
      '  return 1;',
      '  // spec section 4, before the closing brace',
      '}',
      '// docs/dirqueue.md#no-such-anchor and docs/nowhere.md and docs/dirqueue.md#job-names',
    ].join('\n');
    const problems = commentProblems(tsComments(path.join(ROOT, 'test', 'planted.ts'), src));
    assert.deepEqual(problems, [
      'test/planted.ts:1: qpsmtpd-compat (not in the repository): cite docs/compat.md#...',
      'test/planted.ts:5: "spec section": cite docs/NAME.md#anchor',
      'test/planted.ts:7: docs/dirqueue.md has no heading with anchor #no-such-anchor',
      'test/planted.ts:7: docs/nowhere.md does not exist',
    ]);
    const sh = hashComments(path.join(ROOT, 'scripts', 'planted.sh'), '#!/bin/bash\necho "$#" ${#x}\nx=1  # see contract-notes.md\n');
    assert.deepEqual(commentProblems(sh), [
      'scripts/planted.sh:3: contract notes (not in the repository): cite a docs section or state the fact',
    ]);
  });
});
