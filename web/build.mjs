// Bundles the chat page (/) and the dashboard (/admin) into web/dist, which the binary embeds.
// `node build.mjs [outdir]`: scripts/build-web builds into web/dist; scripts/test builds into a
// temporary directory and compares, so a bundle older than its sources fails the tests.
import { build } from 'esbuild';
import { cpSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';

const outdir = process.argv[2] || 'dist';
rmSync(outdir, { recursive: true, force: true });
mkdirSync(outdir, { recursive: true });

const entries = readdirSync('src').filter((f) => /^(chat|admin)\.ts$/.test(f)).map((f) => join('src', f));
await build({
  entryPoints: entries,
  bundle: true,
  format: 'esm',
  target: 'es2020',
  minify: true,
  legalComments: 'none',
  outdir,
  // tsunagi-client from its TypeScript sources (clients/js/src), not a prebuilt dist
  conditions: ['source'],
  logLevel: 'warning',
});
for (const f of readdirSync('src')) {
  if (/\.(html|css|svg)$/.test(f)) cpSync(join('src', f), join(outdir, f));
}
