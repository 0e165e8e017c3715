/**
 * The queue's address: `redis://[user:pass@]HOST:PORT[/DB]` or `rediss://…` (TLS), parsed once
 * into ioredis connection options. Passwords never appear in messages or logs (`redacted`).
 */
import { readFileSync } from 'node:fs';
import type { RedisOptions } from 'bullmq';
import { UsageError } from '../util/errors.js';

export interface QueueAddress {
  options: RedisOptions;
  /** The URL with the password replaced by "***", for logs and messages. */
  redacted: string;
}

/** BullMQ queue name (every coordinator and worker of one deployment use the same). */
export const QUEUE_NAME = 'time-debias-render';

/** Parse a queue URL; errors name `field`, the parameter the URL came from (`queue` by default). */
export function parseQueueUrl(url: string, field = 'queue'): QueueAddress {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new UsageError(
      `${JSON.stringify(url.replace(/:[^:@/]*@/, ':***@'))} is not a URL; expected redis://[user:pass@]HOST:PORT[/DB] or rediss://… (TLS)`,
      { field },
    );
  }
  const redacted = u.password ? url.replace(`:${u.password}@`, ':***@') : url;
  if (u.protocol !== 'redis:' && u.protocol !== 'rediss:') {
    throw new UsageError(
      `${JSON.stringify(redacted)} has scheme ${u.protocol}; the queue is redis:// or rediss:// (TLS)`,
      { field },
    );
  }
  if (!u.hostname) throw new UsageError(`${JSON.stringify(redacted)} names no host`, { field });
  const port = u.port ? Number(u.port) : 6379;
  const path = u.pathname.replace(/^\//, '');
  if (path !== '' && !/^\d{1,2}$/.test(path))
    throw new UsageError(
      `${JSON.stringify(redacted)}: the path must be a database number (/0 … /15), not ${JSON.stringify(path)}`,
      { field },
    );
  if (u.search || u.hash)
    throw new UsageError(`${JSON.stringify(redacted)}: query and fragment are not supported`, { field });
  const options: RedisOptions = {
    host: u.hostname.replace(/^\[|\]$/g, ''),
    port,
    db: path ? Number(path) : 0,
    // BullMQ's workers need blocking commands to wait across reconnects; producers wait too, and
    // the coordinator's own deadlines (producer.ts) bound how long.
    maxRetriesPerRequest: null,
    retryStrategy: (times: number) => Math.min(200 * times, 2000),
  };
  if (u.username) options.username = decodeURIComponent(u.username);
  if (u.password) options.password = decodeURIComponent(u.password);
  if (u.protocol === 'rediss:') options.tls = tlsOptions();
  return { options, redacted };
}

/** TLS options: system CAs, plus TIME_DEBIAS_REDIS_CA (a PEM file path) for a private CA. */
function tlsOptions(): NonNullable<RedisOptions['tls']> {
  const ca = process.env.TIME_DEBIAS_REDIS_CA;
  if (!ca) return {};
  return { ca: [readCa(ca)] };
}

function readCa(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (cause) {
    throw new UsageError(`TIME_DEBIAS_REDIS_CA: cannot read ${JSON.stringify(path)} (${(cause as Error).message})`, {
      cause,
    });
  }
}
