// The access token and the HTTP client. The token comes from the page's ?token= (then leaves the address bar)
// or from what the user typed, and lives in sessionStorage for this tab. api() sends it as a Bearer header and
// turns every failure into an HttpError whose message is a sentence a user can read.

const TOKEN_KEY = "dfstream-token";

let unauthorized = () => {};

/** Move ?token= from the address into sessionStorage (out of history and screenshots). */
export function takeTokenFromUrl() {
  const url = new URL(location.href);
  const value = url.searchParams.get("token");
  if (value) {
    setToken(value);
    url.searchParams.delete("token");
    history.replaceState(null, "", url.pathname + url.search + url.hash);
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(value) {
  sessionStorage.setItem(TOKEN_KEY, value);
}

/** `path` with the token as a query parameter, for what cannot send a header (websocket, <img>, links). */
export function withToken(path) {
  const t = token();
  if (!t) return path;
  return `${path}${path.includes("?") ? "&" : "?"}token=${encodeURIComponent(t)}`;
}

/** Called with `refused` (true when a token was sent and turned down) whenever the server answers 401. */
export function onUnauthorized(callback) {
  unauthorized = callback;
}

export class HttpError extends Error {
  constructor(status, text) {
    super(text || `HTTP ${status}`);
    this.status = status; // 0: the server could not be reached
  }
}

/** fetch with the token; JSON in and out. Throws HttpError (status, the server's words). */
export async function api(path, { method = "GET", json, keepalive = false } = {}) {
  const init = { method, headers: {}, keepalive };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers["Content-Type"] = "application/json";
  }
  const t = token();
  if (t) init.headers.Authorization = `Bearer ${t}`;
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (err) {
    throw new HttpError(0, "The server cannot be reached.");
  }
  if (resp.status === 401) {
    unauthorized(Boolean(t));
    throw new HttpError(401, "This server needs its access token.");
  }
  const text = await resp.text();
  if (!resp.ok) throw new HttpError(resp.status, text.trim() || resp.statusText);
  return text ? JSON.parse(text) : null;
}
