// The one back-off formula for everything on the page that retries (the websocket, a tile's video relay):
// 1 s, 2 s, 4 s … doubling up to a ceiling, each with ±25 % jitter so that many pages do not retry in step.

export const BACKOFF_MAX_S = 30;

/** Seconds to wait before retry number `attempt` (1, 2, …). */
export function backoffS(attempt, maxS = BACKOFF_MAX_S) {
  return Math.min(maxS, 2 ** (Math.max(1, attempt) - 1)) * (0.75 + Math.random() * 0.5);
}

/** Counts the attempts of one thing that retries: next() gives the wait before the next one, reset() on success. */
export class Backoff {
  constructor(maxS = BACKOFF_MAX_S) {
    this.maxS = maxS;
    this.attempt = 0;
  }

  next() {
    this.attempt += 1;
    return backoffS(this.attempt, this.maxS);
  }

  reset() {
    this.attempt = 0;
  }
}

export function sleep(seconds) {
  return new Promise((resolve) => setTimeout(resolve, seconds * 1000));
}
