// The README and docs/ are read on GitHub, where a relative link that points nowhere, or to a
// heading that was renamed, fails silently. This checks every relative link in README.md and
// docs/*.md: the file (or folder) it names exists inside the repository, and its #anchor is a
// heading of the target as GitHub slugs it. It also holds the README to what a newcomer reads
// in five minutes: at most 250 lines, starting with the two commands. And every source path the
// pages name in code spans must exist, so a file moved by a refactor is not described at its old address.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = path.resolve(__dirname, '..', '..');
const DOCS = path.join(ROOT, 'docs');
const README_MAX_LINES = 250;

function docFiles(): string[] {
  const pages = fs
    .readdirSync(DOCS)
    .filter((f) => f.endsWith('.md'))
    .sort()
    .map((f) => path.join(DOCS, f));
  return [path.join(ROOT, 'README.md'), ...pages];
}

const rel = (file: string): string => path.relative(ROOT, file);

/** The text with fenced code blocks blanked out (line numbers kept) and inline code spans removed. */
function prose(text: string): string[] {
  const out: string[] = [];
  let fence: string | undefined;
  for (const line of text.split('\n')) {
    const m = /^\s*(`{3,}|~{3,})/.exec(line);
    if (fence !== undefined) {
      if (m && m[1][0] === fence[0] && m[1].length >= fence.length && line.trim() === m[1]) fence = undefined;
      out.push('');
    } else if (m) {
      fence = m[1];
      out.push('');
    } else {
      out.push(line.replace(/(`+)[\s\S]*?\1/g, ''));
    }
  }
  return out;
}

/** GitHub's heading anchors (github-slugger): lower case, punctuation dropped, spaces to hyphens, repeats numbered. */
function headingSlugs(text: string): Set<string> {
  const slugs = new Set<string>();
  const seen = new Map<string, number>();
  let fence: string | undefined;
  for (const line of text.split('\n')) {
    const f = /^\s*(`{3,}|~{3,})/.exec(line);
    if (fence !== undefined) {
      if (f && f[1][0] === fence[0] && line.trim() === f[1]) fence = undefined;
      continue;
    }
    if (f) {
      fence = f[1];
      continue;
    }
    const h = /^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$/.exec(line);
    if (!h) continue;
    const heading = h[1]
      .replace(/!?\[([^\]]*)\]\([^)]*\)/g, '$1') // a link's text only
      .replace(/<[^>]+>/g, ''); // inline HTML
    const base = heading
      .toLowerCase()
      .replace(/[^\p{L}\p{M}\p{N}\p{Pc} -]/gu, '')
      .replace(/ /g, '-');
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    slugs.add(n === 0 ? base : `${base}-${n}`);
  }
  return slugs;
}

interface Link {
  file: string;
  line: number;
  target: string;
}

function links(file: string): Link[] {
  const out: Link[] = [];
  prose(fs.readFileSync(file, 'utf8')).forEach((text, i) => {
    // [text](target "title") and ![alt](target); reference definitions [x]: target; HTML href/src.
    for (const m of text.matchAll(/!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g)) out.push({ file, line: i + 1, target: m[1] });
    const def = /^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)/.exec(text);
    if (def) out.push({ file, line: i + 1, target: def[1] });
    for (const m of text.matchAll(/\b(?:href|src)="([^"]+)"/g)) out.push({ file, line: i + 1, target: m[1] });
  });
  return out;
}

const isExternal = (target: string): boolean => /^[a-z][a-z0-9+.-]*:/i.test(target) || target.startsWith('//');

/** What is wrong with one link, or undefined when it resolves. */
function problem(link: Link): string | undefined {
  const hash = link.target.indexOf('#');
  const pathPart = decodeURIComponent(hash < 0 ? link.target : link.target.slice(0, hash));
  const anchor = hash < 0 ? undefined : decodeURIComponent(link.target.slice(hash + 1));
  const resolved = pathPart === '' ? link.file : path.resolve(path.dirname(link.file), pathPart);
  if (resolved !== ROOT && !resolved.startsWith(ROOT + path.sep)) return `points outside the repository (${pathPart})`;
  if (!fs.existsSync(resolved)) return `${rel(resolved)} does not exist`;
  if (anchor === undefined || anchor === '') return undefined;
  if (!resolved.endsWith('.md')) return `#${anchor} on ${rel(resolved)}, which is not a Markdown file`;
  const slugs = headingSlugs(fs.readFileSync(resolved, 'utf8'));
  if (!slugs.has(anchor)) return `no heading #${anchor} in ${rel(resolved)} (headings: ${[...slugs].map((s) => '#' + s).join(' ')})`;
  return undefined;
}

describe('README.md and docs/*.md', () => {
  const files = docFiles();

  it('every relative link resolves to a file in the repository, and every #anchor to a heading there', () => {
    const all = files.flatMap(links);
    const relative = all.filter((l) => !isExternal(l.target));
    expect(relative.length).toBeGreaterThan(20);
    const bad = relative.flatMap((l) => {
      const why = problem(l);
      return why ? [`${rel(l.file)}:${l.line}: (${l.target}) ${why}`] : [];
    });
    expect(bad, bad.join('\n')).toEqual([]);
  });

  it('the README is at most 250 lines and starts with the two commands, each doing its own set-up', () => {
    const text = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
    const lines = text.replace(/\n$/, '').split('\n');
    expect(lines.length, `README.md has ${lines.length} lines`).toBeLessThanOrEqual(README_MAX_LINES);
    expect(lines[0]).toBe('# weft');
    expect(lines[1]).toBe('');
    expect(lines[2]).toBe('```sh');
    expect(lines[3]).toMatch(/^npm run lab\s+# set up, /);
    expect(lines[4]).toMatch(/^npm test\s+# set up, /);
    expect(lines[5]).toBe('```');
  });

  it('docs/README.md links every page in docs/, and the README links docs/README.md', () => {
    const index = fs.readFileSync(path.join(DOCS, 'README.md'), 'utf8');
    const targets = new Set(links(path.join(DOCS, 'README.md')).map((l) => l.target.split('#')[0]));
    const pages = fs.readdirSync(DOCS).filter((f) => f.endsWith('.md') && f !== 'README.md');
    expect(pages.length).toBeGreaterThan(0);
    const missing = pages.filter((p) => !targets.has(p));
    expect(missing, `not linked from docs/README.md: ${missing.join(', ')}`).toEqual([]);
    expect(index.length).toBeGreaterThan(0);
    expect(links(path.join(ROOT, 'README.md')).map((l) => l.target)).toContain('docs/README.md');
  });

  it('every repository path named in code (`src/…`, `test/…`, `scripts/…`, …) exists, so a moved file is not described at its old address', () => {
    const missing = files.flatMap((f) =>
      fs
        .readFileSync(f, 'utf8')
        .split('\n')
        .flatMap((l, i) =>
          [...l.matchAll(/`((?:src|test|scripts|perf|compose|native|bin|docs|\.vscode)\/[^`\s]*)`/g)]
            .map((m) => m[1])
            .filter((p) => !/[*{]/.test(p) && !fs.existsSync(path.join(ROOT, p)))
            .map((p) => `${rel(f)}:${i + 1}: ${p}`),
        ),
    );
    expect(missing, missing.join('\n')).toEqual([]);
  });

  it('the pages stand alone: nothing cites a DESIGN.md or a ../shared folder that is not in the repository', () => {
    const cites = files.flatMap((f) =>
      fs
        .readFileSync(f, 'utf8')
        .split('\n')
        .flatMap((l, i) => (/DESIGN\.md|\.\.\/shared\b/.test(l) ? [`${rel(f)}:${i + 1}: ${l.trim()}`] : [])),
    );
    if (!fs.existsSync(path.join(ROOT, 'DESIGN.md'))) expect(cites, cites.join('\n')).toEqual([]);
  });
});
