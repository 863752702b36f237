// A tiny fetch wrapper for the clinician pages: JSON in and out, the session's CSRF
// token (from the page data) on every change, and error bodies
// {error: {code, message, action}} thrown as an ApiError with those fields.

const node = document.getElementById("page-data");
/** The page's data (`data=` of `render.page`), or {}. */
export const pageData = node ? JSON.parse(node.textContent) : {};

export class ApiError extends Error {
  constructor(status, { code = "unavailable", message = "Something went wrong.", action = "", ...extra } = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.action = action;
    Object.assign(this, extra);
  }
}

/** `method` `path` with `body` as JSON; the answer's JSON, or throws ApiError. */
export async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && pageData.csrf_token) headers["X-CSRF-Token"] = pageData.csrf_token;
  let resp;
  try {
    resp = await fetch(path, {
      method, headers, credentials: "same-origin", cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, { code: "network", message: "We could not reach the service.", action: "Check your internet connection and try again." });
  }
  const answer = await resp.json().catch(() => null);
  if (!resp.ok) {
    throw new ApiError(resp.status, answer && answer.error ? answer.error : { message: `The service answered ${resp.status}.`, action: "Try again in a moment." });
  }
  return answer;
}

/** After a 401: to the login page, and back here after logging in. */
export function toLogin() {
  const back = location.pathname + location.search;
  location.assign(`/login?${new URLSearchParams({ expired: "1", next: back })}`);
}

/** The browser's IANA time zone ("America/Chicago"), or "" if it will not say. */
export function browserZone() {
  try { return Intl.DateTimeFormat().resolvedOptions().timeZone || ""; } catch { return ""; }
}

/** A summary URL that asks the server for times in this browser's zone. */
export function summaryUrl(visitId) {
  const zone = browserZone();
  return `/visits/${encodeURIComponent(visitId)}/summary${zone ? `?tz=${encodeURIComponent(zone)}` : ""}`;
}
