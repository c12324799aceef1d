// Against a live memsvc: pytest (tests/clients/test_typescript.py) starts one and sets
// MEMSVC_URL, MEMSVC_API_KEY (tenant A) and MEMSVC_API_KEY_B (tenant B).
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { MemsvcClient, MemsvcError, MemsvcTransportError, retryAfter } from '../src/index.js';

const { MEMSVC_URL, MEMSVC_API_KEY, MEMSVC_API_KEY_B } = process.env;
if (!MEMSVC_URL || !MEMSVC_API_KEY || !MEMSVC_API_KEY_B) {
  throw new Error('set MEMSVC_URL, MEMSVC_API_KEY and MEMSVC_API_KEY_B (pytest tests/clients/test_typescript.py does)');
}
const a = new MemsvcClient({ baseUrl: MEMSVC_URL, apiKey: MEMSVC_API_KEY });
const b = new MemsvcClient({ baseUrl: MEMSVC_URL, apiKey: MEMSVC_API_KEY_B });
const user = `ts-${Math.random().toString(36).slice(2, 8)}`;

test('write, recall with provenance, correct, history, forget', async () => {
  assert.deepEqual(await a.healthz(), { status: 'ok' });
  const written = /** @type {any} */ (await a.add({
    user_id: user,
    messages: [
      { id: 't1', role: 'user', content: 'I moved to Berlin in May 2023.', timestamp: '2023-05-20T10:00:00Z' },
      { id: 't2', role: 'user', content: 'My cat is called Miso.', timestamp: '2023-05-20T10:01:00Z' },
    ],
  }));
  assert.deepEqual(written.skipped, []);
  const episodic = written.written.filter((m) => m.type === 'episodic').map((m) => m.source_ids);
  assert.deepEqual(episodic.sort(), [['t1'], ['t2']]);

  const res = await a.search({ user_id: user, query: 'Where does the user live?', top_k: 3 });
  const top = res.results.reduce((x, y) => (x.rank < y.rank ? x : y));
  assert.match(top.content, /Berlin/);
  assert.deepEqual(top.source_ids, ['t1']);
  assert.ok(top.score > 0 && res.context.includes('Berlin'));

  const page = await a.list({ user_id: user, type: ['episodic'], limit: 1 });
  assert.equal(page.items.length, 1);
  const next = await a.list({ user_id: user, type: ['episodic'], limit: 1, cursor: page.next_cursor ?? undefined });
  assert.notEqual(next.items[0].id, page.items[0].id);

  const updated = await a.update(top.id, { content: 'I moved to Berlin (Kreuzberg) in May 2023.' });
  assert.equal(updated.version, 2);
  const hist = await a.history(top.id);
  assert.deepEqual(hist.versions.map((v) => v.change), ['create', 'update']);
  assert.deepEqual(await a.feedback({ user_id: user, query: 'home', used_memory_ids: [top.id], helpful: true }),
    { recorded: true, memory_ids: [top.id] });
  assert.ok((await a.skills()).length > 0);
  assert.equal((await a.delete(top.id)).status, 'deleted');
});

test('errors carry the server code; another tenant sees nothing', async () => {
  const w = /** @type {any} */ (await a.add({ user_id: user, messages: [{ role: 'user', content: 'I like green tea.' }], infer: false }));
  const id = w.written[0].id;
  await assert.rejects(b.get(id), (err) => err instanceof MemsvcError && err.status === 404 && err.code === 'not_found');
  await assert.rejects(b.delete(id), (err) => err instanceof MemsvcError && err.code === 'not_found');
  assert.deepEqual((await b.search({ user_id: user, query: 'tea' })).results, []);
  await assert.rejects(a.search({ user_id: user, query: 'tea', top_k: 999 }),
    (err) => err instanceof MemsvcError && err.status === 422 && err.code === 'invalid_input');
  const bad = new MemsvcClient({ baseUrl: MEMSVC_URL, apiKey: 'msk_wrong' });
  await assert.rejects(bad.policies(), (err) => err instanceof MemsvcError && err.code === 'unauthenticated');
  assert.equal((await a.get(id)).version, 1);
});

test('wait: false gives a job to poll', async () => {
  const accepted = /** @type {any} */ (await a.add({ user_id: user, wait: false,
    messages: [{ id: 'j1', role: 'user', content: 'I work as a nurse in Lyon.' }] }));
  assert.ok(typeof accepted.job_id === 'string');
  const result = await a.waitForJob(accepted.job_id, { timeoutMs: 60_000 });
  assert.ok(result.written.some((m) => m.source_ids[0] === 'j1'));
  const purged = await a.purgeUser(user);
  assert.equal(purged.user_id, user);
  assert.ok(purged.deleted.memories >= 3);
});

test('429 is retried honouring Retry-After; network errors only when safe', async () => {
  let calls = 0;
  /** @type {typeof fetch} */
  const busy = async () => {
    calls += 1;
    return calls === 1
      ? new Response(JSON.stringify({ error: { code: 'rate_limited', message: 'slow down' } }), { status: 429, headers: { 'retry-after': '0' } })
      : new Response(JSON.stringify({ status: 'ok' }), { status: 200 });
  };
  assert.deepEqual(await new MemsvcClient({ baseUrl: 'http://x', fetch: busy }).healthz(), { status: 'ok' });
  assert.equal(calls, 2);

  calls = 0;
  /** @type {typeof fetch} */
  const down = async () => { calls += 1; throw new TypeError('fetch failed'); };
  const c = new MemsvcClient({ baseUrl: 'http://x', fetch: down, maxRetries: 2, backoffMs: 1 });
  await assert.rejects(c.get('m1'), MemsvcTransportError);
  assert.equal(calls, 3);
  calls = 0;
  await assert.rejects(c.feedback({ user_id: 'u', query: 'q', used_memory_ids: [] }), MemsvcTransportError);
  assert.equal(calls, 1);
  assert.equal(retryAfter('7'), 7);
  assert.equal(retryAfter('soon'), null);
});
