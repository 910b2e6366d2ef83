// Builds dist/index.js (ESM; socket.io-client stays a dependency) and, with tsc, dist/index.d.ts.
import { build } from 'esbuild';

await build({
  entryPoints: ['src/index.ts'],
  bundle: true,
  format: 'esm',
  platform: 'neutral',
  target: 'es2020',
  external: ['socket.io-client'],
  outfile: 'dist/index.js',
  logLevel: 'warning',
});
