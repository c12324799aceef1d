// memsvc-client: a thin fetch client for memsvc's REST API v1 (Node >= 20, browsers, Deno, Bun).
// Plain JavaScript with JSDoc types: it runs as shipped (no build step), while `tsc` checks it
// against `openapi.d.ts`, the types generated from the server's OpenAPI schema.

/** @typedef {import('./openapi.js').components['schemas']} Schemas */
/** @typedef {Schemas['WriteRequest']} WriteRequest */
/** @typedef {Schemas['MessageIn']} Message */
/** @typedef {Schemas['SearchRequest']} SearchRequest */
/** @typedef {Schemas['MemoryPatch']} MemoryPatch */
/** @typedef {Schemas['FeedbackRequest']} FeedbackRequest */
/** @typedef {Schemas['Skipped']} Skipped */
/** @typedef {Schemas['MemoryType']} MemoryType */
/** @typedef {Schemas['MemoryStatus']} MemoryStatus */

/**
 * The contract's `Memory` (the server returns it as a free-form object, so it is spelled out here).
 * @typedef {{
 *   id: string, type: MemoryType, content: string, user_id: string,
 *   agent_id: string | null, session_id: string | null, source_ids: string[],
 *   created_at: string, event_time: string | null, valid_from: string | null, valid_to: string | null,
 *   importance: number, version: number, status: MemoryStatus, metadata: Record<string, unknown>
 * }} Memory
 */
/** @typedef {Memory & { score: number, rank: number, why?: Record<string, unknown> }} SearchHit */
/** @typedef {{ written: Memory[], skipped: Skipped[] }} WriteResult */
/** @typedef {{ results: SearchHit[], context: string }} SearchResult */
/** @typedef {{ items: Memory[], next_cursor: string | null }} MemoryPage */
/** @typedef {{ id: string, state: 'pending' | 'running' | 'done' | 'failed', result: WriteResult | null,
 *   error: { code: string, message: string } | null, created_at: string, updated_at: string }} JobStatus */
/** @typedef {{ version: number, change: string, actor: string | null, changed_at: string,
 *   memory: Record<string, unknown> }} MemoryVersion */
/** @typedef {{ user_id?: string, type?: MemoryType[], status?: MemoryStatus[], q?: string,
 *   limit?: number, cursor?: string }} ListParams */

/** An error answer: `code` is the server's machine-readable code (`not_found`, `forbidden`, …). */
export class MemsvcError extends Error {
  /**
   * @param {number} status
   * @param {string} code
   * @param {string} message
   * @param {unknown} [details]
   */
  constructor(status, code, message, details) {
    super(`${status} ${code}: ${message}`);
    this.name = 'MemsvcError';
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

/** The server could not be reached (after the retries allowed). */
export class MemsvcTransportError extends Error {
  /** @param {string} message @param {unknown} cause */
  constructor(message, cause) {
    super(message, { cause });
    this.name = 'MemsvcTransportError';
  }
}

const RETRY_STATUSES = new Set([429, 503]);

/** @param {string | null} value @returns {number | null} seconds */
export function retryAfter(value) {
  if (!value) return null;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, seconds);
  const when = Date.parse(value);
  return Number.isNaN(when) ? null : Math.max(0, (when - Date.now()) / 1000);
}

/** @param {number} ms */
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * @typedef {{
 *   baseUrl?: string, apiKey?: string, timeoutMs?: number, maxRetries?: number, backoffMs?: number,
 *   fetch?: typeof fetch
 * }} ClientOptions
 */

export class MemsvcClient {
  /** @param {ClientOptions} [options] */
  constructor(options = {}) {
    /** @type {Record<string, string | undefined>} */
    const env = /** @type {any} */ (globalThis).process?.env ?? {};
    this.baseUrl = (options.baseUrl ?? env.MEMSVC_URL ?? 'http://127.0.0.1:8080').replace(/\/+$/, '');
    this.apiKey = options.apiKey ?? env.MEMSVC_API_KEY;
    this.timeoutMs = options.timeoutMs ?? 30_000;
    this.maxRetries = options.maxRetries ?? 3;
    this.backoffMs = options.backoffMs ?? 500;
    this.fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
  }

  /**
   * One request with retries: 429/503 for every call (the server changed nothing), honouring
   * Retry-After; network failures only when `idempotent` (a sent request may have been applied).
   * @param {string} method
   * @param {string} path
   * @param {{ body?: unknown, query?: Record<string, unknown>, idempotent?: boolean, ok?: number[] }} [opts]
   * @returns {Promise<{ status: number, body: any }>}
   */
  async request(method, path, opts = {}) {
    const url = new URL(this.baseUrl + path);
    for (const [key, value] of Object.entries(opts.query ?? {})) {
      if (value === undefined || value === null) continue;
      for (const v of Array.isArray(value) ? value : [value]) url.searchParams.append(key, String(v));
    }
    /** @type {Record<string, string>} */
    const headers = { accept: 'application/json' };
    if (this.apiKey) headers.authorization = `Bearer ${this.apiKey}`;
    if (opts.body !== undefined) headers['content-type'] = 'application/json';
    const idempotent = opts.idempotent ?? method !== 'POST';
    for (let attempt = 0; ; attempt++) {
      let resp;
      try {
        resp = await this.fetch(url, {
          method, headers, body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
          signal: AbortSignal.timeout(this.timeoutMs),
        });
      } catch (err) {
        if (!idempotent || attempt >= this.maxRetries) {
          throw new MemsvcTransportError(`${method} ${path}: ${String(err)}`, err);
        }
        await sleep(this.#backoff(attempt));
        continue;
      }
      if (RETRY_STATUSES.has(resp.status) && attempt < this.maxRetries) {
        const after = retryAfter(resp.headers.get('retry-after'));
        await sleep(after !== null ? after * 1000 : this.#backoff(attempt));
        continue;
      }
      const text = await resp.text();
      let body;
      try { body = text ? JSON.parse(text) : null; } catch { body = text; }
      if (!(opts.ok ?? [200]).includes(resp.status)) {
        const err = body && typeof body === 'object' ? body.error : undefined;
        if (err && typeof err.code === 'string') throw new MemsvcError(resp.status, err.code, err.message ?? '', err.details);
        throw new MemsvcError(resp.status, `http_${resp.status}`, String(text).slice(0, 500));
      }
      return { status: resp.status, body };
    }
  }

  /** @param {number} attempt */
  #backoff(attempt) {
    return Math.min(8000, this.backoffMs * 2 ** attempt) * (0.5 + Math.random() / 2);
  }

  /**
   * Write messages. With `wait: false` the answer is `{ job_id }` (202); see `waitForJob`.
   * @param {WriteRequest} body
   * @returns {Promise<WriteResult | { job_id: string }>}
   */
  async add(body) {
    // The server deduplicates by message id: a write whose messages all have ids may be resent.
    const idempotent = body.messages.every((m) => m.id !== undefined && m.id !== null);
    return (await this.request('POST', '/v1/memories', { body, idempotent, ok: [200, 202] })).body;
  }

  /** @param {string} jobId @returns {Promise<JobStatus>} */
  async job(jobId) {
    return (await this.request('GET', `/v1/jobs/${encodeURIComponent(jobId)}`)).body;
  }

  /**
   * Poll a `wait: false` write until it is done; throws MemsvcError when it failed.
   * @param {string} jobId
   * @param {{ timeoutMs?: number, intervalMs?: number }} [opts]
   * @returns {Promise<WriteResult>}
   */
  async waitForJob(jobId, opts = {}) {
    const deadline = Date.now() + (opts.timeoutMs ?? 120_000);
    for (;;) {
      const status = await this.job(jobId);
      if (status.state === 'done') return status.result ?? { written: [], skipped: [] };
      if (status.state === 'failed') {
        throw new MemsvcError(200, status.error?.code ?? 'job_failed', status.error?.message ?? '');
      }
      if (Date.now() >= deadline) throw new Error(`job ${jobId} still running`);
      await sleep(opts.intervalMs ?? 200);
    }
  }

  /** @param {SearchRequest} body @returns {Promise<SearchResult>} */
  async search(body) {
    return (await this.request('POST', '/v1/memories/search', { body, idempotent: true })).body;
  }

  /** @param {ListParams} [params] @returns {Promise<MemoryPage>} */
  async list(params = {}) {
    return (await this.request('GET', '/v1/memories', { query: params })).body;
  }

  /** @param {string} id @returns {Promise<Memory>} */
  async get(id) {
    return (await this.request('GET', `/v1/memories/${encodeURIComponent(id)}`)).body;
  }

  /** @param {string} id @param {MemoryPatch} patch @returns {Promise<Memory>} */
  async update(id, patch) {
    return (await this.request('PATCH', `/v1/memories/${encodeURIComponent(id)}`, { body: patch, idempotent: false })).body;
  }

  /** @param {string} id @returns {Promise<Memory>} */
  async delete(id) {
    return (await this.request('DELETE', `/v1/memories/${encodeURIComponent(id)}`)).body;
  }

  /** @param {string} id @returns {Promise<{ memory_id: string, versions: MemoryVersion[] }>} */
  async history(id) {
    return (await this.request('GET', `/v1/memories/${encodeURIComponent(id)}/history`)).body;
  }

  /** @param {string} userId @returns {Promise<{ user_id: string, deleted: Record<string, number> }>} */
  async purgeUser(userId) {
    return (await this.request('DELETE', `/v1/users/${encodeURIComponent(userId)}`)).body;
  }

  /**
   * @param {string} userId
   * @param {{ limit?: number, cursor?: string }} [params]
   * @returns {Promise<{ entities: Record<string, unknown>[], relations: Record<string, unknown>[], next_cursor: string | null }>}
   */
  async graph(userId, params = {}) {
    return (await this.request('GET', `/v1/users/${encodeURIComponent(userId)}/graph`, { query: params })).body;
  }

  /** @param {FeedbackRequest} body @returns {Promise<{ recorded: boolean, memory_ids: string[] }>} */
  async feedback(body) {
    return (await this.request('POST', '/v1/feedback', { body, idempotent: false })).body;
  }

  /** @returns {Promise<Record<string, unknown>[]>} */
  async skills() {
    return (await this.request('GET', '/v1/skills')).body.skills;
  }

  /** @returns {Promise<Record<string, unknown>>} */
  async policies() {
    return (await this.request('GET', '/v1/policies')).body;
  }

  /** @returns {Promise<{ status: string }>} */
  async healthz() {
    return (await this.request('GET', '/healthz')).body;
  }

  /** @returns {Promise<{ status: string, checks: Record<string, string> }>} */
  async readyz() {
    return (await this.request('GET', '/readyz')).body;
  }
}
