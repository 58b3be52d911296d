// The served client web/src/pushedge.js is generated from the modules in web/src/client/ by
// web/bundle.mjs (docs/client.md "Inside the client"): it must be up to date, one file without
// imports, and offer exactly what the modules' entry offers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { bundle, OUTPUT } from '../../web/bundle.mjs';

test('web/src/pushedge.js is what web/bundle.mjs makes of web/src/client/ (else: run node web/bundle.mjs)', () => {
  assert.ok(readFileSync(OUTPUT, 'utf8') === bundle(), 'web/src/pushedge.js is stale: run node web/bundle.mjs');
});

test('the bundle imports nothing and exports the same names as web/src/client/index.js', async () => {
  const text = readFileSync(OUTPUT, 'utf8');
  assert.doesNotMatch(text, /^\s*import\b/m);
  const served = await import('../../web/src/pushedge.js');
  const modular = await import('../../web/src/client/index.js');
  assert.deepEqual(Object.keys(served).sort(), ['PushEdge', 'channelTag', 'compareIds', 'decodeCursor', 'default', 'encodeCursor']);
  assert.deepEqual(Object.keys(modular).sort(), Object.keys(served).sort());
  assert.equal(served.default, served.PushEdge);
  assert.equal(modular.default, modular.PushEdge);
});
