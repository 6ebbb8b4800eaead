// Cirrus console: one module, hash routing, no build step. Every piece of model or user content
// goes into the page through textContent (the `h` helper), never innerHTML, and the strict CSP
// forbids inline script and style, so styling is by class only.
import uPlot from "../vendor/uPlot.esm.js";

const DAY = 86400;
// Tick steps for counts: requests and tokens come whole, so no "0.5" on the axis.
const WHOLE_STEPS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 2e5, 5e5, 1e6, 1e7, 1e8, 1e9];
const PALETTE = ["#2563eb", "#d97706", "#059669", "#dc2626", "#7c3aed", "#0891b2", "#db2777", "#65a30d"];

// ---------------------------------------------------------------- DOM and API helpers

/** Build an element. Strings and numbers become text nodes; `on*` keys become listeners. */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "class") el.className = value;
    else if (name === "value") el.value = value;
    else if (name === "text") el.textContent = value;
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

class ApiError extends Error {
  constructor(status, message, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** Call Cirrus with the session cookie. The header is the CSRF guard the backend requires. */
async function api(path, { method = "GET", body, signal, raw = false } = {}) {
  const headers = { "X-Cirrus-Console": "1" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
    signal,
  });
  if (!res.ok) {
    let message = `HTTP ${res.status}`;
    let code;
    try {
      const envelope = await res.json();
      if (envelope && envelope.error) {
        message = envelope.error.message || message;
        code = envelope.error.code || envelope.error.type;
      }
    } catch {
      /* not JSON: keep the status line */
    }
    throw new ApiError(res.status, message, code);
  }
  if (raw) return res;
  if (res.status === 204) return null;
  const type = res.headers.get("content-type") || "";
  return type.includes("json") ? res.json() : res.text();
}

function qs(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : "";
}

const fmt = {
  int: (n) => (n ?? 0).toLocaleString("en-US"),
  usd: (n) => (n === null || n === undefined ? "—" : `$${Number(n).toFixed(n !== 0 && Math.abs(n) < 0.01 ? 6 : 2)}`),
  pct: (a, b) => (b ? `${((100 * a) / b).toFixed(1)}%` : "—"),
  time: (t) => (t ? new Date(t * 1000).toISOString().replace("T", " ").slice(0, 19) : "—"),
  opt: (v) => (v === null || v === undefined || v === "" ? "—" : String(v)),
};

function setStatus(text) {
  document.getElementById("status").textContent = text || "";
}

function errorBox(err) {
  return h("p", { class: "error", role: "alert" }, err instanceof Error ? err.message : String(err));
}

/** Save bytes from an authenticated response as a file (a plain link could not send the header). */
async function download(path, filename) {
  const res = await api(path, { raw: true });
  const url = URL.createObjectURL(await res.blob());
  const a = h("a", { href: url, download: filename, class: "hidden" });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

function table(caption, headers, rows, empty = "Nothing here yet.") {
  if (!rows.length) return h("p", { class: "empty" }, empty);
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      {},
      h("caption", { class: "visually-hidden" }, caption),
      h("thead", {}, h("tr", {}, headers.map((x) => h("th", { scope: "col" }, x)))),
      h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c) => h("td", {}, c))))),
    ),
  );
}

function field(label, input, hint) {
  const id = input.id || `f-${Math.random().toString(36).slice(2, 9)}`;
  input.id = id;
  return h("div", { class: "field" }, h("label", { for: id }, label), input, hint ? h("small", {}, hint) : null);
}

/** Read a Server-Sent Events body, calling onEvent(event, data) for each event. */
async function readSSE(res, onEvent) {
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let cut;
    while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, "");
      let event = "message";
      const data = [];
      for (const line of block.split(/\r?\n/)) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) onEvent(event, data.join("\n"));
    }
  }
}

// ---------------------------------------------------------------- session and routing

const state = { session: null, cleanup: [] };
const view = () => document.getElementById("view");

function onLeave(fn) {
  state.cleanup.push(fn);
}

function showSignedOut(message) {
  state.session = null;
  document.getElementById("nav").hidden = true;
  document.getElementById("signout").hidden = true;
  document.getElementById("who").textContent = "";
  view().replaceChildren();
  document.getElementById("signin").hidden = false;
  document.getElementById("signin-error").textContent = message || "";
  document.getElementById("api-key").focus();
}

function showSignedIn(session) {
  state.session = session;
  document.getElementById("signin").hidden = true;
  document.getElementById("nav").hidden = false;
  document.getElementById("signout").hidden = false;
  for (const a of document.querySelectorAll("[data-master-only]")) a.hidden = !session.is_master;
  const who = session.name || session.key_id;
  document.getElementById("who").textContent =
    session.kind === "master"
      ? "Master key"
      : session.kind === "entra"
        ? `${session.is_master ? "Admin" : "Entra ID"} ${who}`
        : `Key ${who}`;
}

async function signIn(event) {
  event.preventDefault();
  const input = document.getElementById("api-key");
  const button = event.target.querySelector("button");
  button.disabled = true;
  try {
    // The key goes straight from the field into the request body and is cleared: it is never
    // held in a variable, localStorage or sessionStorage.
    const session = await api("/console/api/session", { method: "POST", body: { key: input.value } });
    input.value = "";
    showSignedIn(session);
    if (!location.hash || location.hash === "#/") location.hash = "#/overview";
    else route();
  } catch (err) {
    input.value = "";
    document.getElementById("signin-error").textContent = err.message;
  } finally {
    button.disabled = false;
  }
}

async function signOut() {
  try {
    await api("/console/api/session", { method: "DELETE" });
  } catch {
    /* the cookie is cleared or already invalid either way */
  }
  leave();
  showSignedOut("Signed out.");
}

function leave() {
  for (const fn of state.cleanup.splice(0)) {
    try {
      fn();
    } catch {
      /* a view's teardown never blocks the next view */
    }
  }
}

const ROUTES = {
  overview: renderOverview,
  keys: renderKeys,
  policies: renderPolicies,
  audit: renderAudit,
  usage: renderUsage,
  sessions: renderSessions,
  jobs: renderJobs,
  batches: renderBatches,
  playground: renderPlayground,
};

function route(prefetched) {
  if (!state.session) return;
  leave();
  const [name = "overview", id] = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  let page = ROUTES[name] ? name : "overview";
  if (["keys", "policies", "audit"].includes(page) && !state.session.is_master) page = "overview";
  for (const a of document.querySelectorAll("#nav a")) {
    if (a.getAttribute("href") === `#/${page}`) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  // Each visit renders into a fresh element: a slow page that was left behind keeps appending
  // to its own detached element, never to the page that replaced it.
  const root = h("div", { class: "page" });
  view().replaceChildren(root);
  view().dataset.page = page;
  document.title = `${page[0].toUpperCase()}${page.slice(1)} · Cirrus console`;
  setStatus("");
  ROUTES[page](root, id, prefetched).catch((err) => {
    if (!root.isConnected) return;
    if (err instanceof ApiError && err.status === 401) showSignedOut("Your session has ended. Sign in again.");
    else root.append(errorBox(err));
  });
}

// ---------------------------------------------------------------- Overview

function overviewRequests() {
  const end = Math.floor(Date.now() / 1000);
  const start = end - 30 * DAY;
  return {
    start,
    end,
    // No `end`: the server's "now" includes a record made in this very second, which a
    // whole-second end computed here would cut off.
    series: api(`/v1/usage/series${qs({ start, bucket: "day", group_by: "model" })}`),
    models: api(`/v1/usage${qs({ start, group_by: "model" })}`),
  };
}

async function renderOverview(root, _id, prefetched) {
  root.append(h("h1", {}, "Overview"), h("p", { class: "muted" }, "The last 30 days, by day (UTC)."));
  const req = prefetched || overviewRequests();
  const keysReq = state.session.is_master
    ? api(`/v1/usage${qs({ start: Math.floor(Date.now() / 1000) - 30 * DAY, group_by: "key" })}`)
    : null;
  const [series, models] = await Promise.all([req.series, req.models]);

  const total = models.total || {};
  const sums = series.data.reduce(
    (acc, r) => ({ errors: acc.errors + r.errors, fallbacks: acc.fallbacks + r.fallbacks, requests: acc.requests + r.requests }),
    { errors: 0, fallbacks: 0, requests: 0 },
  );
  root.append(
    h(
      "section",
      { class: "tiles", "aria-label": "Totals" },
      tile("Requests", fmt.int(total.requests)),
      tile("Tokens", fmt.int(total.total_tokens ?? (total.input_tokens || 0) + (total.output_tokens || 0))),
      tile("Cost", fmt.usd(total.cost_usd ?? 0)),
      tile("Error rate", fmt.pct(sums.errors, sums.requests)),
      tile("Fallback rate", fmt.pct(sums.fallbacks, sums.requests)),
    ),
  );

  const charts = h("section", { class: "charts", "aria-label": "Charts" });
  const days = [];
  for (let t = Math.floor(req.start / DAY) * DAY; t <= req.end; t += DAY) days.push(new Date(t * 1000).toISOString().slice(0, 10));
  root.append(charts);
  const plots = [
    chart(charts, "Requests per day by model", series.data, (r) => r.requests, (v) => fmt.int(v), days, true),
    chart(charts, "Tokens per day by model", series.data, (r) => r.input_tokens + r.output_tokens, (v) => fmt.int(v), days, true),
    chart(charts, "Cost per day by model (USD)", series.data, (r) => r.cost_usd, (v) => fmt.usd(v), days),
  ];
  const resize = () => plots.forEach((p) => p && p.setSize(chartSize(p.root.parentElement.parentElement)));
  // Each plot was sized as its figure joined the grid, while fewer figures shared the row.
  resize();
  window.addEventListener("resize", resize);
  onLeave(() => {
    window.removeEventListener("resize", resize);
    plots.forEach((p) => p && p.destroy());
  });

  const tops = h("section", { class: "tops" });
  root.append(tops);
  tops.append(topTable("Top models", "Model", models.data));
  if (keysReq) tops.append(topTable("Top keys", "Key", (await keysReq).data));
}

function tile(label, value) {
  return h("div", { class: "tile" }, h("span", { class: "tile-label" }, label), h("strong", {}, value));
}

function topTable(title, what, rows) {
  const sorted = [...rows].sort((a, b) => b.cost_usd - a.cost_usd || b.requests - a.requests).slice(0, 10);
  return h(
    "div",
    { class: "card" },
    h("h2", {}, title),
    table(
      title,
      [what, "Requests", "Tokens", "Cost", "Errors"],
      sorted.map((r) => [fmt.opt(r.group), fmt.int(r.requests), fmt.int(r.total_tokens), fmt.usd(r.cost_usd), fmt.int(r.errors)]),
      "No usage in this window.",
    ),
  );
}

function chartSize(figure) {
  // The figure's content box: its width less the card's padding.
  const width = Math.max(240, ((figure && figure.clientWidth) || 600) - 34);
  return { width, height: Math.round(Math.min(260, Math.max(160, width * 0.4))) };
}

/** One uPlot line chart: x = day, one series per model. */
function chart(parent, title, rows, value, label, windowDays, whole = false) {
  const days = rows.length ? windowDays : [];
  const groups = [...new Set(rows.map((r) => r.group ?? "(none)"))].sort();
  const figure = h("figure", { class: "card chart" }, h("figcaption", {}, title));
  parent.append(figure);
  if (!days.length) {
    figure.append(h("p", { class: "empty" }, "No usage in this window."));
    return null;
  }
  const index = new Map(days.map((d, i) => [d, i]));
  const data = [days.map((d) => Date.parse(`${d}T00:00:00Z`) / 1000)];
  for (const g of groups) {
    const ys = days.map(() => 0);
    for (const r of rows) if ((r.group ?? "(none)") === g) ys[index.get(r.day)] += value(r);
    data.push(ys);
  }
  const box = h("div", { class: "plot", role: "img", "aria-label": `${title}: chart of ${groups.length} model(s) over ${days.length} day(s)` });
  figure.append(box);
  const opts = {
    ...chartSize(figure),
    legend: { live: false },
    tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
    scales: { x: { time: true } },
    axes: [{}, { values: (_u, ticks) => ticks.map(label), size: 80, ...(whole ? { incrs: WHOLE_STEPS } : {}) }],
    series: [
      { label: "Day" },
      ...groups.map((g, i) => ({
        label: g,
        stroke: PALETTE[i % PALETTE.length],
        width: 2,
        points: { show: days.length < 3 },
        value: (_u, v) => (v === null || v === undefined ? "—" : label(v)),
      })),
    ],
  };
  return new uPlot(opts, data, box);
}

// ---------------------------------------------------------------- Keys

async function renderKeys(root) {
  root.append(h("h1", {}, "Keys"));
  const secretBox = h("div", { "aria-live": "polite" });
  const listBox = h("div");
  root.append(createKeyForm(secretBox, () => loadKeys(listBox, secretBox)), secretBox, h("h2", {}, "All keys"), listBox);
  await loadKeys(listBox, secretBox);
}

function showSecret(box, key, what) {
  const code = h("code", { class: "secret" }, key.key);
  const copy = h("button", {
    type: "button",
    class: "secondary",
    onclick: async () => {
      try {
        await navigator.clipboard.writeText(code.textContent);
        copy.textContent = "Copied";
      } catch {
        const range = document.createRange();
        range.selectNodeContents(code);
        getSelection().removeAllRanges();
        getSelection().addRange(range);
        copy.textContent = "Selected: press Ctrl+C";
      }
    },
  }, "Copy");
  box.replaceChildren(
    h(
      "div",
      { class: "card notice", role: "region", "aria-label": "New secret" },
      h("p", {}, `${what} ${key.key_alias || key.id}. Copy the secret now: it is shown only once.`),
      h("div", { class: "secret-row" }, code, copy),
      h("button", { type: "button", class: "link", onclick: () => box.replaceChildren() }, "Hide"),
    ),
  );
}

function limitsFields(key = {}) {
  return {
    models: h("input", { type: "text", value: (key.models || []).join(", "), placeholder: "all models" }),
    budget: h("input", { type: "number", min: "0", step: "any", value: key.max_budget ?? "" }),
    rpm: h("input", { type: "number", min: "1", step: "1", value: key.rpm_limit ?? "" }),
    tpm: h("input", { type: "number", min: "1", step: "1", value: key.tpm_limit ?? "" }),
  };
}

function limitsBody(f) {
  const num = (el) => (el.value === "" ? null : Number(el.value));
  const models = f.models.value.split(",").map((s) => s.trim()).filter(Boolean);
  return { models, max_budget: num(f.budget), rpm_limit: num(f.rpm), tpm_limit: num(f.tpm) };
}

function createKeyForm(secretBox, reload) {
  const f = limitsFields();
  const name = h("input", { type: "text", maxlength: "256", autocomplete: "off" });
  const expiry = h("input", { type: "date" });
  const err = h("p", { class: "error", role: "alert" });
  const form = h(
    "form",
    { class: "card form-grid", "aria-label": "Create key" },
    h("h2", {}, "Create a key"),
    field("Name", name),
    field("Models", f.models, "Comma-separated; empty allows every model"),
    field("Budget (USD)", f.budget),
    field("Requests per minute", f.rpm),
    field("Tokens per minute", f.tpm),
    field("Expires on", expiry, "Empty: never"),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Create key")),
    err,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    err.textContent = "";
    const body = limitsBody(f);
    if (name.value.trim()) body.key_alias = name.value.trim();
    if (expiry.value) body.expires = Date.parse(`${expiry.value}T23:59:59Z`) / 1000;
    for (const k of Object.keys(body)) if (body[k] === null) delete body[k];
    try {
      const key = await api("/v1/keys", { method: "POST", body });
      form.reset();
      await reload();
      showSecret(secretBox, key, "Created");
    } catch (e) {
      err.textContent = e.message;
    }
  });
  return form;
}

async function loadKeys(listBox, secretBox) {
  const keys = await api("/v1/keys?limit=100");
  const reload = () => loadKeys(listBox, secretBox);
  const rows = keys.data.map((k) => {
    const name = k.key_alias || k.id;
    const active = k.status === "active";
    const revoke = h("button", { type: "button", class: "danger", "aria-label": `Revoke ${name}` }, "Revoke");
    revoke.addEventListener("click", async () => {
      // Two steps instead of confirm(): keyboard- and test-friendly, and no modal.
      if (revoke.dataset.armed !== "1") {
        revoke.dataset.armed = "1";
        revoke.textContent = "Confirm revoke";
        return;
      }
      try {
        await api(`/v1/keys/${encodeURIComponent(k.id)}`, { method: "DELETE" });
        setStatus(`Revoked ${name}.`);
        await reload();
      } catch (e) {
        setStatus(e.message);
      }
    });
    const rotate = h("button", { type: "button", class: "secondary", "aria-label": `Rotate ${name}` }, "Rotate");
    rotate.addEventListener("click", async () => {
      try {
        const rotated = await api(`/v1/keys/${encodeURIComponent(k.id)}/rotate`, { method: "POST", body: {} });
        // The list first, then the secret: whoever waits for the secret finds the list settled
        // (a button pressed in a list about to be replaced would be lost).
        await reload();
        showSecret(secretBox, rotated, "Rotated");
      } catch (e) {
        setStatus(e.message);
      }
    });
    const [edit, editRow] = limitsEditor(name, `/v1/keys/${encodeURIComponent(k.id)}`, k, reload);
    return [
      h("span", {}, name, h("br"), h("small", { class: "muted" }, k.key_name)),
      h("span", { class: `badge ${k.status}` }, k.status),
      k.models.length ? k.models.join(", ") : "all",
      `${fmt.usd(k.spend)} / ${k.max_budget === null ? "∞" : fmt.usd(k.max_budget)}`,
      fmt.opt(k.rpm_limit),
      fmt.opt(k.tpm_limit),
      fmt.opt(k.expires && k.expires.slice(0, 10)),
      h(
        "div",
        { class: "row-actions" },
        active ? [edit, rotate, revoke] : null,
        h("a", { href: `#/audit/${encodeURIComponent(k.id)}`, "aria-label": `History of ${name}` }, "History"),
        editRow,
      ),
    ];
  });
  listBox.replaceChildren(table("Keys", ["Name", "Status", "Models", "Spend / budget", "rpm", "tpm", "Expires", "Actions"], rows, "No virtual keys yet."));
}

/** An Edit button and the row it opens: the limits of a key or policy, as `limitsForm`. */
function limitsEditor(name, path, record, reload) {
  const edit = h("button", { type: "button", class: "secondary", "aria-label": `Edit limits of ${name}`, "aria-expanded": "false" }, "Edit");
  const editRow = h("div", { class: "edit", hidden: true });
  edit.addEventListener("click", () => {
    const open = editRow.hidden;
    edit.setAttribute("aria-expanded", String(open));
    editRow.hidden = !open;
    if (open) editRow.replaceChildren(limitsForm(name, path, record, reload));
  });
  return [edit, editRow];
}

/** The limits of a key or policy (`record`), edited in place and saved with PATCH to `path`. */
function limitsForm(name, path, record, reload) {
  const f = limitsFields(record);
  const err = h("p", { class: "error", role: "alert" });
  const form = h(
    "form",
    { class: "form-grid compact", "aria-label": `Edit limits of ${name}` },
    field("Models", f.models),
    field("Budget (USD)", f.budget),
    field("rpm", f.rpm),
    field("tpm", f.tpm),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Save")),
    err,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await api(path, { method: "PATCH", body: limitsBody(f) });
      setStatus(`Saved ${name}.`);
      await reload();
    } catch (e) {
      err.textContent = e.message;
    }
  });
  return form;
}

// ---------------------------------------------------------------- Usage

async function renderUsage(root) {
  root.append(h("h1", {}, "Usage"));
  const inputs = {
    key_id: h("input", { type: "text", autocomplete: "off" }),
    model: h("input", { type: "text", autocomplete: "off" }),
    status: h("input", { type: "text", autocomplete: "off", placeholder: "ok, or an error code" }),
    session_id: h("input", { type: "text", autocomplete: "off" }),
  };
  const params = () => {
    const p = { limit: 100 };
    for (const [k, el] of Object.entries(inputs)) p[k] = el.value.trim();
    return p;
  };
  const out = h("div");
  const exportBtn = h("button", { type: "button", class: "secondary" }, "Export CSV");
  exportBtn.addEventListener("click", async () => {
    try {
      await download(`/v1/usage/records${qs({ ...params(), limit: undefined, format: "csv" })}`, "cirrus-usage.csv");
    } catch (e) {
      setStatus(e.message);
    }
  });
  const form = h(
    "form",
    { class: "card filters", "aria-label": "Filter usage records" },
    state.session.is_master ? field("Key id", inputs.key_id) : null,
    field("Model", inputs.model),
    field("Status", inputs.status),
    field("Session id", inputs.session_id),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Filter"), exportBtn),
  );
  const load = async () => {
    out.replaceChildren(h("p", { class: "muted" }, "Loading…"));
    try {
      const page = await api(`/v1/usage/records${qs(params())}`);
      out.replaceChildren();
      append(out, [
        table(
          "Usage records",
          ["Time (UTC)", "Key", "Model", "Deployment", "Status", "Tokens in/out", "Cost", "Latency", "Fallback", "Session"],
          page.data.map((r) => [
            fmt.time(r.created_at),
            r.key_id,
            r.model,
            fmt.opt(r.deployment),
            h("span", { class: `badge ${r.status === "ok" ? "active" : "revoked"}` }, r.status),
            `${fmt.int(r.input_tokens)} / ${fmt.int(r.output_tokens)}`,
            fmt.usd(r.cost_usd),
            `${Math.round(r.latency_ms)} ms`,
            r.fallback ? "yes" : "no",
            fmt.opt(r.session_id),
          ]),
          "No records match.",
        ),
        page.has_more ? h("p", { class: "muted" }, "Showing the newest 100. Narrow the filters or export CSV for all.") : null,
      ]);
    } catch (e) {
      if (e.status === 401) throw e;
      out.replaceChildren(errorBox(e));
    }
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    load();
  });
  if (!state.session.is_master) inputs.key_id.value = "";
  root.append(form, out);
  await load();
}

// ---------------------------------------------------------------- Policies (admins)

const ids = (el) => el.value.split(/[\s,]+/).map((x) => x.trim()).filter(Boolean);

async function renderPolicies(root) {
  root.append(
    h("h1", {}, "Policies"),
    h("p", { class: "muted" }, "What Entra ID callers with the Cirrus.User role may do, by object id, app id or group."),
  );
  const listBox = h("div");
  root.append(createPolicyForm(() => loadPolicies(listBox)), h("h2", {}, "All policies"), listBox);
  await loadPolicies(listBox);
}

function createPolicyForm(reload) {
  const f = limitsFields();
  const name = h("input", { type: "text", maxlength: "256", autocomplete: "off" });
  const who = {
    object_ids: h("input", { type: "text", autocomplete: "off", placeholder: "users or service principals" }),
    app_ids: h("input", { type: "text", autocomplete: "off", placeholder: "managed identities, daemon apps" }),
    group_ids: h("input", { type: "text", autocomplete: "off" }),
  };
  const team = h("input", { type: "text", maxlength: "256", autocomplete: "off" });
  const err = h("p", { class: "error", role: "alert" });
  const form = h(
    "form",
    { class: "card form-grid", "aria-label": "Create policy" },
    h("h2", {}, "Create a policy"),
    field("Name", name),
    field("Object ids", who.object_ids, "Comma-separated Entra ids"),
    field("App ids", who.app_ids),
    field("Group ids", who.group_ids),
    field("Team", team, "Its callers share the team's resources"),
    field("Models", f.models, "Comma-separated; empty allows every model"),
    field("Budget (USD)", f.budget),
    field("Requests per minute", f.rpm),
    field("Tokens per minute", f.tpm),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Create policy")),
    err,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    err.textContent = "";
    const body = limitsBody(f);
    for (const [k, el] of Object.entries(who)) body[k] = ids(el);
    if (name.value.trim()) body.name = name.value.trim();
    if (team.value.trim()) body.team_id = team.value.trim();
    for (const k of Object.keys(body)) if (body[k] === null) delete body[k];
    try {
      const policy = await api("/v1/policies", { method: "POST", body });
      form.reset();
      await reload();
      setStatus(`Created ${policy.name || policy.id}.`);
    } catch (e) {
      err.textContent = e.message;
    }
  });
  return form;
}

async function loadPolicies(listBox) {
  const policies = await api("/v1/policies?limit=100");
  const reload = () => loadPolicies(listBox);
  const rows = policies.data.map((p) => {
    const name = p.name || p.id;
    const path = `/v1/policies/${encodeURIComponent(p.id)}`;
    const remove = deleteButton(name, path, reload);
    const [edit, editRow] = limitsEditor(name, path, p, reload);
    const assigned = [
      ...p.object_ids.map((x) => `object ${x}`),
      ...p.app_ids.map((x) => `app ${x}`),
      ...p.group_ids.map((x) => `group ${x}`),
    ];
    return [
      h("span", {}, name, h("br"), h("small", { class: "muted" }, p.id)),
      h("span", {}, assigned.length ? assigned.map((a) => h("small", { class: "block" }, a)) : "nobody yet"),
      p.models.length ? p.models.join(", ") : "all",
      `${fmt.usd(p.spend)} / ${p.max_budget === null ? "∞" : fmt.usd(p.max_budget)}`,
      fmt.opt(p.rpm_limit),
      fmt.opt(p.tpm_limit),
      fmt.opt(p.team_id),
      h(
        "div",
        { class: "row-actions" },
        edit,
        remove,
        h("a", { href: `#/audit/${encodeURIComponent(p.id)}`, "aria-label": `History of ${name}` }, "History"),
        editRow,
      ),
    ];
  });
  listBox.replaceChildren(
    table("Policies", ["Name", "Assigned to", "Models", "Spend / budget", "rpm", "tpm", "Team", "Actions"], rows, "No policies yet."),
  );
}

// ---------------------------------------------------------------- Audit (admins)

function describeChange(e) {
  if (!e.before || !e.after) return e.reason || "";
  const changed = Object.keys(e.after).filter((k) => JSON.stringify(e.before[k]) !== JSON.stringify(e.after[k]));
  return changed.map((k) => `${k}: ${JSON.stringify(e.before[k])} → ${JSON.stringify(e.after[k])}`).join("; ");
}

async function renderAudit(root, target) {
  root.append(h("h1", {}, "Audit log"));
  const inputs = {
    target_id: h("input", { type: "text", autocomplete: "off", placeholder: "key_…, pol_… or csess_…" }),
    actor_id: h("input", { type: "text", autocomplete: "off", placeholder: "master, key_… or entra_…" }),
    action: h("input", { type: "text", autocomplete: "off", placeholder: "key.revoke, or key." }),
  };
  inputs.target_id.value = target || "";
  const params = (after) => {
    const p = { limit: 50, after };
    for (const [k, el] of Object.entries(inputs)) p[k] = el.value.trim();
    return p;
  };
  const out = h("div");
  const more = h("button", { type: "button", class: "secondary", hidden: true }, "Older events");
  const rows = [];
  let last = null;
  const render = () =>
    out.replaceChildren(
      table("Audit events", ["Time (UTC)", "Action", "Who", "About", "Change", "From", "Request"], rows, "No events match."),
    );
  const load = async (after) => {
    if (!after) {
      rows.length = 0;
      out.replaceChildren(h("p", { class: "muted" }, "Loading…"));
    }
    try {
      const page = await api(`/v1/audit${qs(params(after))}`);
      for (const e of page.data) {
        rows.push([
          fmt.time(e.at),
          h("span", { class: `badge ${e.outcome === "success" ? "active" : "revoked"}` }, e.action),
          h("span", {}, e.actor.name || e.actor.id, e.actor.name ? h("br") : null, e.actor.name ? h("small", { class: "muted" }, e.actor.id) : null),
          `${e.target.type} ${e.target.id}`,
          describeChange(e),
          fmt.opt(e.client_ip),
          h("small", { class: "muted" }, e.request_id),
        ]);
      }
      last = page.last_id;
      more.hidden = !page.has_more;
      render();
    } catch (e) {
      if (e.status === 401) throw e;
      out.replaceChildren(errorBox(e));
    }
  };
  more.addEventListener("click", () => load(last));
  const form = h(
    "form",
    { class: "card filters", "aria-label": "Filter audit events" },
    field("About (id)", inputs.target_id),
    field("Who (id)", inputs.actor_id),
    field("Action", inputs.action),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Filter")),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    load();
  });
  root.append(form, out, more);
  await load();
}

// ---------------------------------------------------------------- Sessions

function messageText(content) {
  if (content === null || content === undefined) return "";
  if (typeof content === "string") return content;
  if (Array.isArray(content)) return content.map((p) => (p && typeof p.text === "string" ? p.text : JSON.stringify(p))).join("\n");
  return JSON.stringify(content);
}

async function renderSessions(root, id) {
  if (id) return renderSession(root, id);
  root.append(h("h1", {}, "Sessions"));
  const box = h("div");
  root.append(box);
  const load = async () => {
    const list = await api("/v1/sessions?limit=100");
    box.replaceChildren(
      table(
        "Sessions",
        ["Title", "Id", "Messages", "Updated (UTC)", "Actions"],
        list.data.map((s) => [
          fmt.opt(s.title),
          h("code", {}, s.id),
          fmt.int(s.message_count),
          fmt.time(s.updated_at),
          h(
            "div",
            { class: "row-actions" },
            h("a", { href: `#/sessions/${encodeURIComponent(s.id)}`, class: "button secondary", "aria-label": `Open session ${s.title || s.id}` }, "Open"),
            deleteButton(`session ${s.title || s.id}`, `/v1/sessions/${encodeURIComponent(s.id)}`, load),
          ),
        ]),
        "No sessions yet.",
      ),
    );
  };
  await load();
}

function deleteButton(what, path, after) {
  const btn = h("button", { type: "button", class: "danger", "aria-label": `Delete ${what}` }, "Delete");
  btn.addEventListener("click", async () => {
    if (btn.dataset.armed !== "1") {
      btn.dataset.armed = "1";
      btn.textContent = "Confirm delete";
      return;
    }
    try {
      await api(path, { method: "DELETE" });
      setStatus(`Deleted ${what}.`);
      await after();
    } catch (e) {
      setStatus(e.message);
    }
  });
  return btn;
}

async function renderSession(root, id) {
  const s = await api(`/v1/sessions/${encodeURIComponent(id)}`);
  root.append(
    h("p", {}, h("a", { href: "#/sessions" }, "← All sessions")),
    h("h1", {}, s.title || "Session"),
    h("p", { class: "muted" }, `${s.id} · ${fmt.int(s.message_count)} messages · updated ${fmt.time(s.updated_at)}`),
    h(
      "ol",
      { class: "conversation", "aria-label": "Messages" },
      (s.messages || []).map((m) =>
        h("li", { class: `msg ${m.role}` }, h("span", { class: "role" }, m.role), h("div", { class: "content" }, messageText(m.content))),
      ),
    ),
    h("div", { class: "actions" }, deleteButton(`session ${s.title || s.id}`, `/v1/sessions/${encodeURIComponent(s.id)}`, async () => {
      location.hash = "#/sessions";
    })),
  );
}

// ---------------------------------------------------------------- Jobs

function progressOf(job) {
  const max = job.progress && job.progress.max_steps;
  const step = (job.progress && job.progress.step) || 0;
  const done = ["completed", "failed", "cancelled", "incomplete", "expired"].includes(job.status);
  const label = `Progress of job ${job.id}`;
  const bar = max ? h("progress", { max, value: done ? max : Math.min(step, max), "aria-label": label }) : null;
  return h("span", { class: "progress-cell" }, bar, max ? ` ${step}/${max}` : ` step ${step}`);
}

async function renderJobs(root, id) {
  if (id) return renderJob(root, id);
  root.append(h("h1", {}, "Jobs"));
  const list = await api("/v1/jobs?limit=100");
  root.append(
    table(
      "Jobs",
      ["Job", "Type", "Model", "Status", "Progress", "Created (UTC)"],
      list.data.map((j) => [
        h("a", { href: `#/jobs/${encodeURIComponent(j.id)}` }, j.id),
        j.type,
        fmt.opt(j.model),
        h("span", { class: `badge ${j.status}` }, j.status),
        progressOf(j),
        fmt.time(j.created_at),
      ]),
      "No jobs yet.",
    ),
  );
}

async function renderJob(root, id) {
  const job = await api(`/v1/jobs/${encodeURIComponent(id)}`);
  const statusEl = h("span", { class: `badge ${job.status}` }, job.status);
  const cancel = h("button", { type: "button", class: "danger" }, "Cancel job");
  cancel.addEventListener("click", async () => {
    try {
      const j = await api(`/v1/jobs/${encodeURIComponent(id)}/cancel`, { method: "POST", body: {} });
      statusEl.textContent = j.status;
      setStatus(`Job ${id}: ${j.status}.`);
    } catch (e) {
      setStatus(e.message);
    }
  });
  const events = h("ol", { class: "events", "aria-label": "Live events", "aria-live": "polite" });
  const steps = h(
    "ol",
    { class: "steps", "aria-label": "Steps" },
    (job.steps || []).map((s) => h("li", {}, h("pre", {}, JSON.stringify(s, null, 2)))),
  );
  append(root, [
    h("p", {}, h("a", { href: "#/jobs" }, "← All jobs")),
    h("h1", {}, `Job ${job.id}`),
    h(
      "dl",
      { class: "facts" },
      h("dt", {}, "Status"), h("dd", {}, statusEl),
      h("dt", {}, "Type"), h("dd", {}, job.type),
      h("dt", {}, "Model"), h("dd", {}, fmt.opt(job.model)),
      h("dt", {}, "Progress"), h("dd", {}, progressOf(job)),
      h("dt", {}, "Cost"), h("dd", {}, fmt.usd(job.usage && job.usage.cost_usd)),
      h("dt", {}, "Created (UTC)"), h("dd", {}, fmt.time(job.created_at)),
    ),
    ["queued", "in_progress", "running"].includes(job.status) ? h("div", { class: "actions" }, cancel) : null,
    job.error ? h("p", { class: "error" }, `Error: ${job.error.message || JSON.stringify(job.error)}`) : null,
    job.result !== null && job.result !== undefined
      ? h("section", {}, h("h2", {}, "Result"), h("pre", { class: "result" }, typeof job.result === "string" ? job.result : JSON.stringify(job.result, null, 2)))
      : null,
    h("div", { class: "two-col" }, h("section", {}, h("h2", {}, "Steps"), steps), h("section", {}, h("h2", {}, "Events"), events)),
  ]);
  // Steps come from the job itself; an event that ends a step or the job re-reads it.
  const refresh = async () => {
    try {
      const j = await api(`/v1/jobs/${encodeURIComponent(id)}`);
      statusEl.textContent = j.status;
      statusEl.className = `badge ${j.status}`;
      steps.replaceChildren(...(j.steps || []).map((s) => h("li", {}, h("pre", {}, JSON.stringify(s, null, 2)))));
    } catch {
      /* the live events still show what happened */
    }
  };
  // EventSource cannot send the X-Cirrus-Console header, so the events come through fetch().
  const abort = new AbortController();
  onLeave(() => abort.abort());
  api(`/v1/jobs/${encodeURIComponent(id)}/events`, { raw: true, signal: abort.signal })
    .then((res) =>
      readSSE(res, (event, data) => {
        let parsed = data;
        try {
          parsed = JSON.parse(data);
        } catch {
          /* keep the text */
        }
        events.append(h("li", {}, h("strong", {}, event), " ", h("code", {}, typeof parsed === "string" ? parsed : JSON.stringify(parsed))));
        if (event === "step.finished" || event.startsWith("job.")) refresh();
      }),
    )
    .then(() => events.append(h("li", { class: "muted" }, "Stream ended.")))
    .catch((e) => {
      if (e.name !== "AbortError") events.append(h("li", { class: "error" }, e.message));
    });
}

// ---------------------------------------------------------------- Batches

async function renderBatches(root) {
  root.append(h("h1", {}, "Batches"));
  const box = h("div");
  root.append(box);
  const load = async () => {
    const list = await api("/v1/batches?limit=100");
    box.replaceChildren(
      table(
        "Batches",
        ["Batch", "Endpoint", "Status", "Progress", "Created (UTC)", "Files and actions"],
        list.data.map((b) => {
          const c = b.request_counts || { total: 0, completed: 0, failed: 0 };
          const done = c.completed + c.failed;
          const actions = h("div", { class: "row-actions" });
          if (b.output_file_id)
            actions.append(fileButton(`Download output of ${b.id}`, "Output", b.output_file_id, `${b.id}-output.jsonl`));
          if (b.error_file_id)
            actions.append(fileButton(`Download errors of ${b.id}`, "Errors", b.error_file_id, `${b.id}-errors.jsonl`));
          if (["validating", "in_progress", "finalizing"].includes(b.status)) {
            const cancel = h("button", { type: "button", class: "danger", "aria-label": `Cancel batch ${b.id}` }, "Cancel");
            cancel.addEventListener("click", async () => {
              try {
                await api(`/v1/batches/${encodeURIComponent(b.id)}/cancel`, { method: "POST", body: {} });
                await load();
              } catch (e) {
                setStatus(e.message);
              }
            });
            actions.append(cancel);
          }
          return [
            h("code", {}, b.id),
            b.endpoint,
            h("span", { class: `badge ${b.status}` }, b.status),
            h(
              "span",
              { class: "progress-cell" },
              h("progress", { max: Math.max(c.total, 1), value: c.total ? done : 0, "aria-label": `Progress of batch ${b.id}` }),
              ` ${done}/${c.total}${c.failed ? ` (${c.failed} failed)` : ""}`,
            ),
            fmt.time(b.created_at),
            actions,
          ];
        }),
        "No batches yet.",
      ),
    );
  };
  await load();
}

function fileButton(label, text, fileId, filename) {
  const btn = h("button", { type: "button", class: "secondary", "aria-label": label }, text);
  btn.addEventListener("click", () =>
    download(`/v1/files/${encodeURIComponent(fileId)}/content`, filename).catch((e) => setStatus(e.message)),
  );
  return btn;
}

// ---------------------------------------------------------------- Playground

async function renderPlayground(root) {
  root.append(h("h1", {}, "Playground"));
  const models = await api("/v1/models");
  const model = h("select", {}, models.data.map((m) => h("option", { value: m.id }, m.id)));
  const system = h("textarea", { rows: "3", placeholder: "You are a helpful assistant." });
  const temperature = h("input", { type: "number", min: "0", max: "2", step: "0.1", value: "1" });
  const maxTokens = h("input", { type: "number", min: "1", step: "1", value: "512" });
  const message = h("textarea", { rows: "3", required: true });
  const log = h("ol", { class: "conversation", "aria-label": "Conversation", "aria-live": "polite" });
  const meta = h("p", { class: "meta", role: "status" });
  const send = h("button", { type: "submit" }, "Send");
  const stop = h("button", { type: "button", class: "secondary", disabled: true }, "Stop");
  const clear = h("button", { type: "button", class: "link" }, "Clear conversation");
  const history = [];
  let controller = null;

  clear.addEventListener("click", () => {
    history.length = 0;
    log.replaceChildren();
    meta.textContent = "";
  });
  stop.addEventListener("click", () => controller && controller.abort());
  onLeave(() => controller && controller.abort());

  const form = h(
    "form",
    { class: "playground", "aria-label": "Chat" },
    h(
      "div",
      { class: "card settings" },
      field("Model", model),
      field("System prompt", system),
      field("Temperature", temperature),
      field("Max tokens", maxTokens),
    ),
    h(
      "div",
      { class: "card chat" },
      log,
      field("Message", message),
      h("div", { class: "actions" }, send, stop, clear),
      meta,
    ),
  );
  message.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) form.requestSubmit();
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!message.value.trim() || controller) return;
    history.push({ role: "user", content: message.value });
    log.append(h("li", { class: "msg user" }, h("span", { class: "role" }, "user"), h("div", { class: "content" }, message.value)));
    message.value = "";
    const answer = h("div", { class: "content" });
    log.append(h("li", { class: "msg assistant" }, h("span", { class: "role" }, "assistant"), answer));
    const messages = system.value.trim() ? [{ role: "system", content: system.value }, ...history] : [...history];
    const body = { model: model.value, messages, stream: true, stream_options: { include_usage: true } };
    if (temperature.value !== "") body.temperature = Number(temperature.value);
    if (maxTokens.value !== "") body.max_tokens = Number(maxTokens.value);
    controller = new AbortController();
    send.disabled = true;
    stop.disabled = false;
    meta.textContent = "Streaming…";
    let served = {};
    let usage = null;
    let stopped = false;
    try {
      const res = await api("/v1/chat/completions", { method: "POST", body, raw: true, signal: controller.signal });
      served = {
        model: res.headers.get("x-cirrus-model"),
        deployment: res.headers.get("x-cirrus-deployment"),
        fallback: res.headers.get("x-cirrus-fallback"),
        cost: res.headers.get("x-cirrus-cost-usd"),
        requestId: res.headers.get("x-request-id"),
      };
      await readSSE(res, (_event, data) => {
        if (data === "[DONE]") return;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message || "The stream failed.");
        const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
        if (delta && typeof delta.content === "string") answer.textContent += delta.content;
        if (chunk.usage) usage = chunk.usage;
      });
    } catch (e) {
      if (e.name === "AbortError") stopped = true;
      else answer.append(h("span", { class: "error" }, `${answer.textContent ? " — " : ""}${e.message}`));
    } finally {
      controller = null;
      send.disabled = false;
      stop.disabled = true;
    }
    if (answer.textContent) history.push({ role: "assistant", content: answer.textContent });
    meta.textContent = describe(served, usage, served.cost, stopped);
    if (served.cost === null || served.cost === undefined) {
      // No cost header: the usage record for this request is the newest one (written async,
      // so it may need a moment).
      for (const wait of [300, 1000, 2000]) {
        await new Promise((r) => setTimeout(r, wait));
        try {
          const rec = (await api("/v1/usage/records?limit=1")).data[0];
          if (rec && (!served.requestId || rec.request_id === served.requestId)) {
            meta.textContent = describe({ ...served, deployment: served.deployment || rec.deployment, fallback: served.fallback ?? String(rec.fallback) }, usage, rec.cost_usd, stopped);
            break;
          }
        } catch {
          break;
        }
      }
    }
  });
  root.append(form);
}

function describe(served, usage, cost, stopped) {
  const parts = [
    `Deployment: ${served.deployment || "unknown"}`,
    `Fallback: ${served.fallback === "true" || served.fallback === "1" ? "yes" : served.fallback ? "no" : "unknown"}`,
    `Cost: ${cost === null || cost === undefined ? "pending" : fmt.usd(Number(cost))}`,
  ];
  if (served.model) parts.unshift(`Model: ${served.model}`);
  if (usage) parts.push(`Tokens: ${usage.prompt_tokens} in / ${usage.completion_tokens} out`);
  if (stopped) parts.push("Stopped");
  return parts.join(" · ");
}

// ---------------------------------------------------------------- start

function start() {
  document.getElementById("signin-form").addEventListener("submit", signIn);
  document.getElementById("signout").addEventListener("click", signOut);
  window.addEventListener("hashchange", () => route());
  // The session check and the overview's data go out together, so the first chart is three
  // round trips from a cold start: the page, its module and stylesheet, then the data.
  const onOverview = !location.hash || location.hash.startsWith("#/overview") || location.hash === "#/";
  const prefetched = onOverview ? overviewRequests() : null;
  if (prefetched) [prefetched.series, prefetched.models].forEach((p) => p.catch(() => {}));
  api("/console/api/session")
    .then((session) => {
      showSignedIn(session);
      route(prefetched);
    })
    .catch(() => showSignedOut());
}

start();
