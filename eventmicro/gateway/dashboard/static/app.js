// eventmicro dashboard: services and live stats ($SRV), endpoint calls, live CloudEvents.
// Plain JavaScript, no build step, nothing loaded from elsewhere. Every text from the server
// goes into the page through textContent, never as HTML.
"use strict";

(() => {
  const ROOT = document.documentElement.dataset.root || "";
  const TOKEN_KEY = "eventmicro.gateway.dashboard.token";
  const POLL_MS = 2000; // live stats: /dashboard/services
  const MAX_SHOWN = 200; // events kept in the list
  const FLUSH_MS = 100; // events are added to the page in batches

  const $ = (id) => document.getElementById(id);

  /** An element with attributes ("text", "class", "data-*", any other) and children. */
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "text") node.textContent = String(value);
      else if (key === "class") node.className = value;
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child === undefined || child === null) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  // --- the token ---------------------------------------------------------------------------

  const token = () => sessionStorage.getItem(TOKEN_KEY) || "";

  function headers(extra = {}) {
    const result = new Headers(extra);
    if (token()) result.set("Authorization", "Bearer " + token());
    return result;
  }

  /** fetch() below the gateway's root with the token; a 401 asks for one (the response is returned). */
  async function api(path, options = {}) {
    const response = await fetch(ROOT + path, { cache: "no-store", ...options, headers: headers(options.headers) });
    if (response.status === 401) askToken();
    return response;
  }

  function askToken() {
    const form = $("token-form");
    if (!form.hidden) return;
    form.hidden = false;
    $("token-forget").hidden = true;
    setStatus("error", token() ? "the token was refused" : "a token is needed");
    $("token-input").focus();
  }

  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("token-input").value.trim();
    if (!value) return;
    sessionStorage.setItem(TOKEN_KEY, value);
    $("token-input").value = "";
    $("token-form").hidden = true;
    $("token-forget").hidden = false;
    restart();
  });

  $("token-forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    $("token-forget").hidden = true;
    restart();
  });

  function setStatus(kind, text) {
    const node = $("status");
    node.textContent = text;
    node.dataset.state = kind;
  }

  /** The detail of a gateway error body ({"error": {"code", "id", "detail"}}), or the status text. */
  async function errorText(response) {
    const text = await response.text();
    try {
      const error = JSON.parse(text).error;
      if (error && error.detail) return error.detail;
    } catch (_) {
      // not JSON: the status line says enough
    }
    return response.statusText || "HTTP " + response.status;
  }

  // --- schemas from /openapi.json ----------------------------------------------------------

  let openapi = null; // the gateway's OpenAPI document
  let schemas = null; // its components.schemas, or null when the gateway publishes none
  let schemasSignature = ""; // the services the document was loaded for

  async function loadSchemas() {
    try {
      const response = await api("/openapi.json");
      openapi = response.ok ? await response.json() : null;
    } catch (_) {
      openapi = null;
    }
    schemas = (openapi && openapi.components && openapi.components.schemas) || null;
    shownSignature = ""; // render the schemas now known
    if (services) renderServices(services);
  }

  /** The component schema of a name, with the components it refers to. */
  function schemaOf(fullName) {
    if (!schemas || !fullName || !Object.hasOwn(schemas, fullName)) return null;
    const found = {};
    const pending = [fullName];
    while (pending.length && Object.keys(found).length < 50) {
      const name = pending.shift();
      if (Object.hasOwn(found, name) || !Object.hasOwn(schemas, name)) continue;
      found[name] = schemas[name];
      JSON.stringify(schemas[name], (key, value) => {
        if (key === "$ref" && typeof value === "string") pending.push(value.split("/").pop());
        return value;
      });
    }
    return Object.keys(found).length === 1 ? found[fullName] : found;
  }

  /** The JSON schema OpenAPI gives an endpoint's request or reply (what the gateway knows of it). */
  function operationSchema(service, endpoint, role) {
    const path = openapi && openapi.paths && openapi.paths[`/api/${service}/${endpoint}`];
    const post = path && path.post;
    if (!post) return null;
    const content = role === "request" ? post.requestBody && post.requestBody.content
      : post.responses && post.responses["200"] && post.responses["200"].content;
    return (content && content["application/json"] && content["application/json"].schema) || null;
  }

  /** What to show of a schema: its components when it refers to one, null when it says nothing. */
  function shownSchema(schema) {
    if (!schema) return null;
    if (typeof schema.$ref === "string") return schemaOf(schema.$ref.split("/").pop());
    const keys = Object.keys(schema);
    return keys.length && !(keys.length === 1 && keys[0] === "description") ? schema : null;
  }

  function resolve(schema) {
    let found = schema;
    for (let n = 0; found && typeof found.$ref === "string" && n < 20; n++) {
      const name = found.$ref.split("/").pop();
      found = schemas && Object.hasOwn(schemas, name) ? schemas[name] : null;
    }
    return found && typeof found === "object" ? found : {};
  }

  /** A value fitting ``schema``, to start a request from (undefined: leave the field out). */
  function example(schema, path = []) {
    const ref = schema && typeof schema.$ref === "string" ? schema.$ref : null;
    if (ref && path.includes(ref)) return undefined; // a recursive message: stop here
    const within = ref ? [...path, ref] : path;
    const s = resolve(schema);
    if (within.length > 6) return undefined;
    if ("const" in s) return s.const;
    if ("default" in s && s.default !== null) return s.default;
    if (Array.isArray(s.enum) && s.enum.length) return s.enum[0];
    const choices = s.anyOf || s.oneOf;
    if (Array.isArray(choices) && choices.length) {
      return example(choices.find((c) => resolve(c).type !== "null") || choices[0], within);
    }
    let type = s.type;
    if (Array.isArray(type)) type = type.find((t) => t !== "null") || type[0];
    if (!type && s.properties) type = "object";
    switch (type) {
      case "object": {
        const out = {};
        for (const [name, field] of Object.entries(s.properties || {})) {
          const value = example(field, within);
          if (value !== undefined) out[name] = value;
        }
        return out;
      }
      case "array": {
        const item = s.items ? example(s.items, within) : undefined;
        return item === undefined ? [] : [item];
      }
      case "string":
        if (s.format === "date-time") return new Date().toISOString().replace(/\.\d+Z$/, "Z");
        if (s.format === "date") return new Date().toISOString().slice(0, 10);
        if (s.format === "uuid") return "00000000-0000-0000-0000-000000000000";
        if (s.format === "int64" || s.format === "uint64") return "0";
        if (s.pattern && s.pattern.endsWith("s$")) return "1s"; // google.protobuf.Duration
        return "";
      case "integer":
      case "number":
        return typeof s.minimum === "number" && s.minimum > 0 ? s.minimum : 0;
      case "boolean":
        return false;
      case "null":
        return null;
      default:
        return undefined;
    }
  }

  /** The request body a chosen endpoint starts with: an example of its request schema, or {}. */
  function prefill(service, endpoint) {
    const schema = operationSchema(service, endpoint, "request");
    const value = schema && shownSchema(schema) ? example(schema) : undefined;
    return value === undefined ? "{}" : JSON.stringify(value, null, 2);
  }

  // --- services and live stats -------------------------------------------------------------

  let services = null;
  let shownSignature = "";
  const statCells = new Map(); // "kind:service:..." -> element whose text is a live number
  let pollTimer = 0;

  let polling = 0; // the current polling loop; a restart begins a new one

  function startPolling() {
    clearTimeout(pollTimer);
    poll(++polling);
  }

  async function poll(loop) {
    try {
      const response = await api("/dashboard/services");
      if (loop !== polling) return;
      if (response.ok) {
        services = (await response.json()).services;
        renderServices(services);
        setStatus("ok", `connected · ${services.length} service${services.length === 1 ? "" : "s"}`);
        $("services-updated").textContent = "updated " + new Date().toLocaleTimeString();
      } else if (response.status !== 401) {
        setStatus("error", "services: " + (await errorText(response)));
      }
    } catch (_) {
      if (loop !== polling) return;
      setStatus("error", "the gateway does not answer");
    }
    if (loop === polling) pollTimer = setTimeout(() => poll(loop), POLL_MS);
  }

  function signature(list) {
    return JSON.stringify(
      list.map((s) => [s.name, s.version, s.description, s.subscribes, s.publishes,
        s.endpoints.map((e) => [e.name, e.subject, e.queue_group, e.request, e.reply]),
        s.instances.map((i) => [i.id, i.version, i.started]), handlerNames(s)]),
    );
  }

  function renderServices(list) {
    const wanted = signature(list);
    if (wanted !== schemasSignature) {
      schemasSignature = wanted; // new services or endpoints: ask for the schemas again
      loadSchemas();
    }
    if (wanted !== shownSignature) {
      const open = new Set([...document.querySelectorAll("#services details[open]")].map((d) => d.dataset.key));
      statCells.clear();
      $("services").replaceChildren(...list.map((s) => serviceCard(s, open)));
      $("services-empty").hidden = list.length > 0;
      shownSignature = wanted;
      fillServiceChoice(list);
    }
    updateStats(list);
  }

  function stat(key, cls) {
    const cell = el("td", { class: "num " + (cls || ""), "data-stat": key });
    statCells.set(key, cell);
    return cell;
  }

  function serviceCard(service, open) {
    const count = service.instances.length;
    const card = el("article", { class: "service", id: "service-" + service.name, "data-testid": "service",
      "data-service": service.name },
    el("h3", {},
      el("span", { class: "name", text: service.name }), " ",
      el("span", { class: "version", text: service.version }), " ",
      el("span", { class: "badge", "data-testid": "instance-count", text: `${count} instance${count === 1 ? "" : "s"}` })),
    service.description ? el("p", { class: "muted", text: service.description }) : null,
    chips("subscribes to", service.subscribes, "subscribes"),
    chips("publishes", service.publishes, "publishes"));
    if (service.endpoints.length) card.append(endpointTable(service, open));
    card.append(chartsOf(service));
    card.append(instanceTable(service));
    return card;
  }

  function chips(label, names, testid) {
    if (!names.length) return null;
    return el("p", { class: "chips", "data-testid": testid }, label + ": ",
      ...names.map((n) => el("code", { class: "chip", text: n })));
  }

  function endpointTable(service, open) {
    const body = el("tbody");
    for (const endpoint of service.endpoints) {
      const key = `${service.name}:${endpoint.name}`;
      const tryButton = el("button", { type: "button", class: "small", "data-testid": "try-endpoint", text: "Try" });
      tryButton.addEventListener("click", () => chooseEndpoint(service.name, endpoint.name));
      body.append(el("tr", { "data-testid": "endpoint", "data-endpoint": endpoint.name },
        el("td", {}, el("code", { text: endpoint.name })),
        el("td", {}, el("code", { text: endpoint.subject }),
          endpoint.queue_group ? el("span", { class: "muted queue", text: "queue " + endpoint.queue_group }) : null),
        el("td", {}, el("code", { text: endpoint.request || "?" }), " → ", el("code", { text: endpoint.reply || "?" })),
        stat("req:" + key), stat("err:" + key), stat("avg:" + key),
        el("td", {}, tryButton)));
      const details = el("details", { "data-key": "schema:" + key, "data-testid": "endpoint-schemas" },
        el("summary", { text: "request and reply schemas" }),
        schemaBlock("Request", endpoint.request, operationSchema(service.name, endpoint.name, "request")),
        schemaBlock("Reply", endpoint.reply, operationSchema(service.name, endpoint.name, "reply")));
      details.open = open.has("schema:" + key);
      body.append(el("tr", { class: "schemas" }, el("td", { colspan: 7 }, details)));
    }
    return el("table", { class: "endpoints" },
      el("caption", { text: "Endpoints" }),
      el("thead", {}, el("tr", {}, ...["endpoint", "subject", "request → reply", "requests", "errors",
        "average", ""].map((h) => el("th", { text: h })))),
      body);
  }

  function schemaBlock(title, label, operation) {
    const schema = shownSchema(operation);
    return el("div", { class: "schema", "data-testid": "schema-" + title.toLowerCase() },
      el("h5", {}, title + ": ", el("code", { text: label || "?" })),
      schema ? el("pre", { text: JSON.stringify(schema, null, 2) })
        : el("p", { class: "muted", text: "no schema published for this type" }));
  }

  function instanceTable(service) {
    const body = el("tbody");
    for (const instance of service.instances) {
      const key = `${service.name}:${instance.id}`;
      body.append(el("tr", { "data-testid": "instance", "data-instance": instance.id },
        el("td", {}, el("code", { title: instance.id, text: instance.id.slice(0, 12) })),
        el("td", { text: instance.version }),
        el("td", { text: instance.started ? new Date(instance.started).toLocaleString() : "?" }),
        stat("health:" + key, "health"),
        stat("calls:" + key, "calls"),
        stat("events:" + key, "calls"),
        stat("circuits:" + key, "circuits")));
    }
    return el("table", { class: "instances" },
      el("caption", { text: "Instances" }),
      el("thead", {}, el("tr", {}, ...["instance", "version", "started", "health",
        "per endpoint: requests / errors / average / last error", "per event handler: received / errors / last error",
        "circuits of its calls"]
        .map((h) => el("th", { text: h })))),
      body);
  }

  const ms = (ns) => (ns / 1e6).toFixed(ns >= 1e7 ? 0 : 2) + " ms";

  function healthText(health) {
    if (!health) return ["unknown", "unknown"];
    if (health.ready) return ["ready", "ok"];
    if (health.live) return [`not ready (${health.state || "?"})`, "warn"];
    return [`not live (${health.state || "?"})`, "bad"];
  }

  // an open circuit is a dependency failing fast; half-open is one being tried again
  function circuitState(circuits) {
    if (circuits.some(([, state]) => state === "open")) return "bad";
    if (circuits.some(([, state]) => state === "half_open")) return "warn";
    return circuits.length ? "ok" : undefined;
  }

  function setStat(key, text, state) {
    const cell = statCells.get(key);
    if (!cell) return;
    if (cell.textContent !== text) cell.textContent = text;
    if (state !== undefined) cell.dataset.state = state;
  }

  function updateStats(list) {
    for (const service of list) {
      const totals = new Map();
      for (const instance of service.instances) {
        const key = `${service.name}:${instance.id}`;
        const [text, state] = healthText(instance.health);
        setStat("health:" + key, text, state);
        setStat("calls:" + key, instance.endpoints.map((e) =>
          `${e.name}: ${e.num_requests} / ${e.num_errors} / ${ms(e.average_processing_time)}` +
          (e.last_error ? ` / ${e.last_error}` : "")).join("\n") || "–");
        setStat("events:" + key, Object.entries(instance.events || {}).map(([name, e]) =>
          `${name}: ${e.received} / ${e.errors}` + (e.last_error ? ` / ${e.last_error}` : "")).join("\n") || "–");
        const circuits = Object.entries(instance.circuits || {});
        setStat("circuits:" + key, circuits.map(([target, state]) => `${target}: ${state.replace("_", "-")}`)
          .join("\n") || "–", circuitState(circuits));
        for (const e of instance.endpoints) {
          const t = totals.get(e.name) || { requests: 0, errors: 0, time: 0 };
          t.requests += e.num_requests;
          t.errors += e.num_errors;
          t.time += e.average_processing_time * e.num_requests;
          totals.set(e.name, t);
        }
      }
      for (const endpoint of service.endpoints) {
        const key = `${service.name}:${endpoint.name}`;
        const t = totals.get(endpoint.name) || { requests: 0, errors: 0, time: 0 };
        setStat("req:" + key, String(t.requests));
        setStat("err:" + key, String(t.errors), t.errors ? "bad" : "ok");
        setStat("avg:" + key, t.requests ? ms(t.time / t.requests) : "–");
      }
    }
    sample(list);
  }

  // --- live charts (SVG drawn here; rates from the counters' change between two polls) ------

  const HISTORY = 90; // points per chart: three minutes at one poll every 2 s
  const SVG = "http://www.w3.org/2000/svg";
  const WIDTH = 300;
  const HEIGHT = 60;
  const charts = new Map(); // "traffic:svc:endpoint" -> chart (kept across re-renders)
  const counters = new Map(); // "svc:instance:what" -> the value at the previous poll
  let sampledAt = 0;

  function handlerNames(service) {
    const names = new Set();
    for (const instance of service.instances) Object.keys(instance.events || {}).forEach((n) => names.add(n));
    return [...names].sort();
  }

  function svg(tag, attrs = {}) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
    return node;
  }

  /** A chart: one <path> per series, a legend with each series' last value and the scale. */
  function chart(key, title, series, unit) {
    let found = charts.get(key);
    if (found) return found;
    const box = svg("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, preserveAspectRatio: "none", role: "img",
      "aria-label": title });
    box.append(svg("path", { class: "grid", d: `M0 ${HEIGHT / 2}H${WIDTH}M0 ${HEIGHT - 0.5}H${WIDTH}` }));
    const paths = series.map((name, i) => svg("path", { class: "line s" + i, "data-series": name,
      "data-points": 0, "vector-effect": "non-scaling-stroke" }));
    box.append(...paths);
    const values = series.map((name, i) => el("span", { class: "s" + i, "data-testid": "chart-value",
      "data-series": name, text: name + " –" }));
    const scale = el("span", { class: "muted scale", "data-testid": "chart-scale", text: "" });
    const note = el("p", { class: "muted note", "data-testid": "chart-note", hidden: true });
    const node = el("figure", { class: "chart", "data-testid": "chart", "data-chart": key },
      el("figcaption", { text: title }), box, el("div", { class: "legend" }, ...values, scale), note);
    const hideEmpty = key.startsWith("latency:");
    found = { node, series, unit, paths, values, scale, note, hideEmpty, points: series.map(() => []) };
    charts.set(key, found);
    return found;
  }

  function chartsOf(service) {
    const figures = [];
    for (const endpoint of service.endpoints) {
      const key = `${service.name}:${endpoint.name}`;
      figures.push(chart("traffic:" + key, `${endpoint.name}: calls/s and errors/s`, ["calls/s", "errors/s"], "/s").node);
      figures.push(chart("latency:" + key, `${endpoint.name}: latency (ms)`, ["p50", "p99", "average"], " ms").node);
    }
    for (const name of handlerNames(service)) {
      figures.push(chart(`events:${service.name}:${name}`, `${name}: events/s and errors/s`,
        ["events/s", "errors/s"], "/s").node);
    }
    return el("div", { class: "charts", "data-testid": "charts" }, ...figures);
  }

  /** How much ``value`` grew since the previous poll (a restarted instance starts from 0). */
  function grew(key, value) {
    const before = counters.get(key);
    counters.set(key, value);
    if (before === undefined) return null;
    return value >= before ? value - before : value;
  }

  function grewAll(key, values) {
    const before = counters.get(key);
    counters.set(key, values);
    if (!before || before.length !== values.length) return null;
    const restarted = values.some((v, i) => v < before[i]);
    return values.map((v, i) => (restarted ? v : v - before[i]));
  }

  /** The value below which a share ``q`` of the histogram's counts lie (linear within a bucket). */
  function quantile(bounds, counts, q) {
    const total = counts.reduce((a, b) => a + b, 0);
    if (!total) return null;
    const rank = q * total;
    let seen = 0;
    for (let i = 0; i < counts.length; i++) {
      if (counts[i] && seen + counts[i] >= rank) {
        if (i >= bounds.length) return bounds[bounds.length - 1]; // above the last bound
        const low = i ? bounds[i - 1] : 0;
        return low + (bounds[i] - low) * ((rank - seen) / counts[i]);
      }
      seen += counts[i];
    }
    return bounds[bounds.length - 1];
  }

  function sample(list) {
    const now = performance.now();
    const seconds = sampledAt ? (now - sampledAt) / 1000 : 0;
    sampledAt = now;
    for (const service of list) {
      for (const endpoint of service.endpoints) {
        const key = `${service.name}:${endpoint.name}`;
        let calls = null, errors = null, time = null, bounds = null, buckets = null, histograms = false;
        for (const instance of service.instances) {
          const e = instance.endpoints.find((x) => x.name === endpoint.name);
          if (!e) continue;
          const base = `${service.name}:${instance.id}:${endpoint.name}`;
          const c = grew(base + ":n", e.num_requests);
          const f = grew(base + ":e", e.num_errors);
          const t = grew(base + ":t", e.average_processing_time * e.num_requests);
          if (c !== null) calls = (calls || 0) + c;
          if (f !== null) errors = (errors || 0) + f;
          if (t !== null) time = (time || 0) + t;
          if (e.latency) {
            histograms = true;
            const d = grewAll(base + ":h", e.latency.counts);
            if (d && (!bounds || bounds.join() === e.latency.le.join())) {
              bounds = e.latency.le;
              buckets = buckets ? buckets.map((v, i) => v + d[i]) : d;
            }
          }
        }
        const ok = seconds > 0;
        push("traffic:" + key, [ok && calls !== null ? calls / seconds : null,
          ok && errors !== null ? errors / seconds : null], now);
        const latency = charts.get("latency:" + key);
        if (latency) {
          latency.note.hidden = histograms;
          latency.note.textContent = histograms ? "" : "Average shown: p50 and p99 need the service's " +
            "metrics on (eventmicro.metrics.enable(), or a metrics port).";
          const p = (q) => (buckets ? quantile(bounds, buckets, q) : null);
          const p50 = p(0.5), p99 = p(0.99);
          const average = calls && time !== null ? time / calls / 1e6 : null;
          push("latency:" + key, [p50 === null ? null : p50 * 1000, p99 === null ? null : p99 * 1000,
            histograms ? null : average], now);
        }
      }
      for (const name of handlerNames(service)) {
        let received = null, failed = null;
        for (const instance of service.instances) {
          const e = (instance.events || {})[name];
          if (!e) continue;
          const base = `${service.name}:${instance.id}:event:${name}`;
          const r = grew(base + ":n", Number(e.received) || 0);
          const f = grew(base + ":e", Number(e.errors) || 0);
          if (r !== null) received = (received || 0) + r;
          if (f !== null) failed = (failed || 0) + f;
        }
        const ok = seconds > 0;
        push(`events:${service.name}:${name}`, [ok && received !== null ? received / seconds : null,
          ok && failed !== null ? failed / seconds : null], now);
      }
    }
  }

  const round = (v) => (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2));

  function push(key, values, now) {
    const found = charts.get(key);
    if (!found) return;
    values.forEach((v, i) => {
      const points = found.points[i];
      points.push({ t: now, v });
      if (points.length > HISTORY) points.shift();
    });
    draw(found, now);
  }

  /** A "nice" top of the scale: 1, 2 or 5 times a power of ten, at least ``v``. */
  function niceTop(v) {
    if (!(v > 0)) return 1;
    const power = 10 ** Math.floor(Math.log10(v));
    return [1, 2, 5, 10].map((m) => m * power).find((m) => m >= v);
  }

  function draw(found, now) {
    const span = HISTORY * POLL_MS;
    let top = 0;
    for (const points of found.points) for (const p of points) if (p.v !== null && p.v > top) top = p.v;
    top = niceTop(top);
    found.points.forEach((points, i) => {
      let d = "";
      let run = 0; // points in the current unbroken run
      let count = 0;
      for (const p of points) {
        if (p.v === null) {
          if (run === 1) d += "h-4"; // a point alone still shows, as a short dash
          run = 0;
          continue;
        }
        const x = Math.max(0, WIDTH - ((now - p.t) / span) * WIDTH).toFixed(1);
        const y = (HEIGHT - (p.v / top) * (HEIGHT - 2) - 1).toFixed(1);
        d += (run ? "L" : "M") + x + " " + y;
        run += 1;
        count += 1;
      }
      if (run === 1) d += "h-4";
      found.paths[i].setAttribute("d", d || "M0 0");
      found.paths[i].setAttribute("data-points", count);
      const peak = points.reduce((m, p) => (p.v !== null && p.v > m ? p.v : m), 0);
      found.paths[i].setAttribute("data-peak", round(peak)); // the highest value shown
      found.paths[i].classList.toggle("empty", !count);
      const last = [...points].reverse().find((p) => p.v !== null);
      found.values[i].textContent = `${found.series[i]} ${last ? round(last.v) : "–"}`;
      found.values[i].hidden = found.hideEmpty && !count; // latency: p50/p99, or the average
    });
    found.scale.textContent = `scale 0–${round(top)}${found.unit}`;
  }

  // --- the call form -----------------------------------------------------------------------

  function fillServiceChoice(list) {
    const select = $("call-service");
    const before = select.value;
    const callable = list.filter((s) => s.endpoints.length);
    select.replaceChildren(...callable.map((s) => el("option", { value: s.name, text: s.name })));
    if (callable.some((s) => s.name === before)) select.value = before;
    fillEndpointChoice();
  }

  function fillEndpointChoice() {
    const select = $("call-endpoint");
    const before = select.value;
    const service = (services || []).find((s) => s.name === $("call-service").value);
    const endpoints = service ? service.endpoints : [];
    select.replaceChildren(...endpoints.map((e) => el("option", { value: e.name, text: e.name })));
    if (endpoints.some((e) => e.name === before)) select.value = before;
    $("call-submit").disabled = !endpoints.length;
    describeChoice();
  }

  function describeChoice() {
    const service = (services || []).find((s) => s.name === $("call-service").value);
    const endpoint = service && service.endpoints.find((e) => e.name === $("call-endpoint").value);
    $("call-types").textContent = endpoint ? `${endpoint.request || "?"} → ${endpoint.reply || "?"}` +
      (endpoint.idempotent ? " (idempotent)" : "") : "";
    showBody(endpoint ? `${service.name}/${endpoint.name}` : "");
  }

  const drafts = new Map(); // "service/endpoint" -> the body the user left there
  let bodyKey = ""; // the endpoint whose body the form shows
  let prefilled = ""; // the body that endpoint started with

  /** The body of the chosen endpoint: what the user left there, else an example of its schema. */
  function showBody(key) {
    const body = $("call-body");
    const [service, endpoint] = key.split("/");
    if (key === bodyKey) {
      if (key && body.value === prefilled) body.value = prefilled = prefill(service, endpoint); // schemas came
      return;
    }
    if (bodyKey) {
      if (body.value !== prefilled) drafts.set(bodyKey, body.value);
      else drafts.delete(bodyKey);
    }
    bodyKey = key;
    prefilled = key ? prefill(service, endpoint) : "{}";
    body.value = drafts.has(key) ? drafts.get(key) : prefilled;
    $("call-result").hidden = true; // the previous endpoint's answer
  }

  function chooseEndpoint(service, endpoint) {
    $("call-service").value = service;
    fillEndpointChoice();
    $("call-endpoint").value = endpoint;
    describeChoice();
    $("call-body").focus();
  }

  $("call-service").addEventListener("change", fillEndpointChoice);
  $("call-endpoint").addEventListener("change", describeChoice);

  function showResult(outcome, status, body) {
    $("call-result").hidden = false;
    $("call-result").dataset.outcome = outcome;
    $("call-status").textContent = status;
    $("call-reply").textContent = body;
  }

  $("call-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const service = $("call-service").value;
    const endpoint = $("call-endpoint").value;
    if (!service || !endpoint) return;
    const text = $("call-body").value.trim() || "{}";
    try {
      JSON.parse(text);
    } catch (error) {
      showResult("invalid", "not sent: the request is not valid JSON", error.message);
      return;
    }
    $("call-submit").disabled = true;
    const started = performance.now();
    try {
      const response = await api(`/api/${encodeURIComponent(service)}/${encodeURIComponent(endpoint)}`, {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: text,
      });
      const took = `${Math.round(performance.now() - started)} ms`;
      const raw = await response.text();
      let reply = null;
      try {
        reply = JSON.parse(raw);
      } catch (_) {
        reply = null;
      }
      const line = `${response.status} ${response.statusText}`.trim();
      if (response.ok) {
        showResult("ok", `${line} · ${took}`, reply === null ? raw : JSON.stringify(reply, null, 2));
      } else {
        const error = (reply && reply.error) || {};
        const detail = error.detail || raw || response.statusText;
        showResult("error", `${line} · ${detail}` + (error.id ? ` (${error.id})` : ""),
          reply === null ? raw : JSON.stringify(reply, null, 2));
      }
    } catch (error) {
      showResult("error", "the gateway does not answer", String(error.message || error));
    } finally {
      $("call-submit").disabled = !$("call-endpoint").value;
    }
  });

  // --- live events (fetch + ReadableStream, so the Authorization header can be sent) --------

  let stream = null; // the AbortController of the open stream
  let retryTimer = 0;
  let retryDelay = 1000;
  let received = 0;
  let dropped = 0;
  let paused = false;
  let pending = []; // events not on the page yet (newest last)
  let flushTimer = 0;
  const documents = new WeakMap(); // <details> -> its event, rendered when first opened

  function setEventsState(text, state) {
    $("events-state").textContent = text;
    $("events-state").dataset.state = state;
  }

  function connectEvents() {
    if (stream) stream.abort();
    clearTimeout(retryTimer);
    const controller = (stream = new AbortController());
    const query = new URLSearchParams();
    const subject = $("events-subject").value.trim();
    const type = $("events-type").value.trim();
    if (subject) query.set("subject", subject);
    if (type) query.set("type", type);
    readEvents(controller, "/dashboard/events" + (query.toString() ? "?" + query : ""));
  }

  function retry(controller) {
    if (controller.signal.aborted) return;
    setEventsState(`reconnecting in ${retryDelay / 1000} s`, "warn");
    retryTimer = setTimeout(connectEvents, retryDelay);
    retryDelay = Math.min(retryDelay * 2, 10000);
  }

  async function readEvents(controller, path) {
    setEventsState("connecting…", "warn");
    let response;
    try {
      response = await api(path, { headers: { Accept: "text/event-stream" }, signal: controller.signal });
    } catch (_) {
      retry(controller);
      return;
    }
    if (response.status === 401) {
      setEventsState("needs a token", "bad");
      return; // restart() reconnects once a token is given
    }
    if (!response.ok) {
      const detail = await errorText(response);
      $("events-error").textContent = `${response.status}: ${detail}`;
      $("events-error").hidden = false;
      setEventsState("not connected", "bad");
      if (response.status >= 500) retry(controller);
      return;
    }
    $("events-error").hidden = true;
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          onBlock(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
        }
      }
    } catch (_) {
      // aborted, or the connection broke: retried below unless aborted on purpose
    }
    retry(controller);
  }

  function onBlock(block) {
    let kind = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line.startsWith(":")) continue; // a comment: connected, heartbeat
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "event") kind = value;
      else if (field === "data") data.push(value);
    }
    if (!data.length) return;
    let document_;
    try {
      document_ = JSON.parse(data.join("\n"));
    } catch (_) {
      return;
    }
    if (kind === "ready") {
      retryDelay = 1000;
      setEventsState("live on " + document_.subject + (document_.type ? " · type " + document_.type : ""), "ok");
    } else if (kind === "dropped") {
      dropped += document_.dropped;
      $("events-dropped").textContent = `${dropped} event${dropped === 1 ? " was" : "s were"} dropped: ` +
        "this page fell behind the stream (the gateway keeps a bounded queue per page).";
      $("events-dropped").hidden = false;
    } else {
      received += 1;
      pending.push(document_);
      if (pending.length > MAX_SHOWN) pending = pending.slice(-MAX_SHOWN);
      if (!flushTimer && !paused) flushTimer = setTimeout(flushEvents, FLUSH_MS);
    }
  }

  function flushEvents() {
    flushTimer = 0;
    $("events-count").textContent = String(received);
    if (paused || !pending.length) return;
    const list = $("events");
    const items = pending.map(eventItem).reverse(); // newest first
    pending = [];
    list.prepend(...items);
    while (list.children.length > MAX_SHOWN) list.lastElementChild.remove();
  }

  const clock = (when) => when.toTimeString().slice(0, 8) + "." + String(when.getMilliseconds()).padStart(3, "0");

  function eventItem(doc) {
    const when = doc.time ? new Date(doc.time) : new Date();
    const summary = el("summary", {},
      el("time", { text: isNaN(when) ? String(doc.time) : clock(when) }), " ",
      doc.error ? el("span", { class: "error", "data-testid": "event-error", text: doc.error })
        : el("span", { class: "type", "data-testid": "event-type", text: doc.type }), " ",
      el("span", { class: "muted", text: doc.source || "" }), " ",
      el("code", { class: "subject", text: doc.subject }));
    const details = el("details", {}, summary);
    documents.set(details, doc);
    details.addEventListener("toggle", () => {
      if (details.open && details.childElementCount === 1) {
        details.append(el("pre", { text: JSON.stringify(documents.get(details), null, 2) }));
      }
    });
    return el("li", { class: doc.error ? "event malformed" : "event", "data-testid": "event",
      "data-type": doc.error ? "" : doc.type || "" }, details);
  }

  $("events-filter").addEventListener("submit", (event) => {
    event.preventDefault();
    retryDelay = 1000;
    connectEvents();
  });

  $("events-pause").addEventListener("click", () => {
    paused = !paused;
    $("events-pause").textContent = paused ? "Resume" : "Pause";
    $("events-pause").setAttribute("aria-pressed", String(paused));
    if (!paused) flushEvents();
  });

  $("events-clear").addEventListener("click", () => {
    $("events").replaceChildren();
    pending = [];
    received = 0;
    dropped = 0;
    $("events-count").textContent = "0";
    $("events-dropped").hidden = true;
  });

  // --- start -------------------------------------------------------------------------------

  function restart() {
    $("token-forget").hidden = !token();
    schemasSignature = ""; // the first answer loads them (with the token, if any)
    startPolling();
    connectEvents();
  }

  restart();
})();
