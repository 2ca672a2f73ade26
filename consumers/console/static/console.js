// gopwatch console: follows /api/live (server-sent events) and draws streams, event cards and
// timelines. Every value from the wire goes into the page as text, never as HTML.
"use strict";

const BUILT_IN = ["photosensitive_flash", "qr_code", "text_lexicon", "known_content"];
const SVG = "http://www.w3.org/2000/svg";
const events = new Map(); // event id -> {revs: [message], latest: message}
const stills = new Map(); // event id -> {revision, url}: the latest still of the event
const categories = new Set(BUILT_IN);
const streamIds = new Set();
let dirty = false;

const $ = (id) => document.getElementById(id);

function catClass(cat) {
  return BUILT_IN.slice(0, 3).includes(cat) ? `cat-${cat}` : "cat-kb";
}

function isOpen(entry) {
  return entry.latest.event.lifecycle !== "ended";
}

function onMessage(msg) {
  if (msg.type === "reset") {
    events.clear();
    stills.clear();
  } else if (msg.type === "event") {
    const e = msg.event;
    let entry = events.get(e.event_id);
    if (!entry) {
      entry = { revs: [], latest: msg };
      events.set(e.event_id, entry);
    }
    if (!entry.revs.some((m) => m.event.revision === e.revision)) entry.revs.push(msg);
    entry.revs.sort((a, b) => a.event.revision - b.event.revision);
    entry.latest = entry.revs[entry.revs.length - 1];
    if (msg.still_url) keepStill(e.event_id, e.revision, msg.still_url);
    categories.add(e.category);
    streamIds.add(e.stream_id);
  } else if (msg.type === "still") {
    keepStill(msg.event_id, msg.revision, msg.url);
  }
  dirty = true;
}

function keepStill(eventId, revision, url) {
  const have = stills.get(eventId);
  if (!have || have.revision <= revision) stills.set(eventId, { revision, url });
}

function fillSelect(select, values) {
  const have = new Set([...select.options].map((o) => o.value));
  for (const v of [...values].sort()) {
    if (!have.has(v)) {
      const o = document.createElement("option");
      o.value = v;
      o.textContent = v;
      select.appendChild(o);
    }
  }
}

function visible(entry) {
  const e = entry.latest.event;
  const cat = $("f-category").value;
  const sid = $("f-stream").value;
  return (!cat || e.category === cat) && (!sid || e.stream_id === sid) && (!$("f-open").checked || isOpen(entry));
}

function ago(ms) {
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 90) return `${s} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  return `${(s / 3600).toFixed(1)} h ago`;
}

function card(entry) {
  const e = entry.latest.event;
  let el = document.querySelector(`.card[data-event-id="${e.event_id}"]`);
  if (!el) {
    el = $("card-template").content.firstElementChild.cloneNode(true);
    el.dataset.eventId = e.event_id;
    el.querySelector(".raw").href = `/api/events/${e.event_id}`;
    for (const what of ["replay", "allow"]) {
      el.querySelector(`.${what}-toggle`).addEventListener("click", () => {
        const code = el.querySelector(`.${what}`);
        code.hidden = !code.hidden;
      });
    }
  }
  el.dataset.category = e.category;
  el.dataset.stream = e.stream_id;
  el.classList.toggle("open", isOpen(entry));
  const cat = el.querySelector(".cat");
  cat.textContent = e.category;
  cat.className = `cat ${catClass(e.category)}`;
  el.querySelector(".life").textContent = e.lifecycle;
  const peak = Math.max(...entry.revs.map((m) => m.event.score));
  el.querySelector(".score").textContent = `score ${e.score.toFixed(2)} (peak ${peak.toFixed(2)})`;
  el.querySelector(".stream").textContent = `stream ${e.stream_id}`;
  el.querySelector(".when").textContent =
    `${e.window.start_s.toFixed(1)}–${e.window.end_s.toFixed(1)} s in the stream · revision ${e.revision}`;
  el.querySelector(".age").dataset.since = entry.revs[0].produced_ms;
  el.querySelector(".replay").textContent = entry.latest.replay;
  // the knowledge base's events: the command that allow-lists the still's picture
  el.querySelector(".allow-toggle").hidden = !entry.latest.allow;
  el.querySelector(".allow").textContent = entry.latest.allow || "";
  const still = stills.get(e.event_id);
  el.classList.toggle("no-still", !still);
  if (still) {
    const img = el.querySelector(".still");
    if (img.getAttribute("src") !== still.url) img.src = still.url;
    el.querySelector(".still-link").href = still.url;
    img.alt = `evidence still of ${e.category} in ${e.stream_id}`;
  }
  el.hidden = !visible(entry);
  return el;
}

function renderCards() {
  const entries = [...events.values()].sort(
    (a, b) => isOpen(b) - isOpen(a) || b.latest.produced_ms - a.latest.produced_ms,
  );
  const box = $("cards");
  entries.forEach((entry, i) => {
    const el = card(entry);
    if (box.children[i] !== el) box.insertBefore(el, box.children[i] || null);
  });
  $("empty").hidden = entries.length > 0;
  const open = entries.filter(isOpen).length;
  $("counts").textContent = `${streamIds.size} streams · ${open} open · ${entries.length} events`;
}

function renderStreams() {
  const list = $("streams");
  list.replaceChildren();
  for (const sid of [...streamIds].sort()) {
    const mine = [...events.values()].filter((x) => x.latest.event.stream_id === sid);
    const open = mine.filter(isOpen);
    const li = document.createElement("li");
    li.className = open.length ? "risk" : "calm";
    li.dataset.stream = sid;
    const name = document.createElement("div");
    name.className = "sid";
    name.textContent = sid;
    const state = document.createElement("div");
    state.className = "state";
    state.textContent = open.length
      ? `at risk: ${open.map((x) => x.latest.event.category).join(", ")}`
      : `no open event (${mine.length} ended)`;
    li.append(name, state);
    li.addEventListener("click", () => {
      $("f-stream").value = $("f-stream").value === sid ? "" : sid;
      dirty = true;
    });
    list.appendChild(li);
  }
}

function svg(tag, attrs, text) {
  const n = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
  if (text !== undefined) n.textContent = text;
  return n;
}

function renderTimelines() {
  const box = $("timelines");
  box.replaceChildren();
  const sidFilter = $("f-stream").value;
  for (const sid of [...streamIds].sort()) {
    if (sidFilter && sid !== sidFilter) continue;
    const mine = [...events.values()].filter((x) => x.latest.event.stream_id === sid);
    const cats = [...new Set(mine.map((x) => x.latest.event.category))].sort();
    const end = Math.max(10, ...mine.map((x) => x.latest.event.window.end_s));
    const W = 1000, left = 130, lane = 26, H = cats.length * lane + 18;
    const x = (t) => left + ((W - left - 10) * t) / end;
    const g = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `timeline of ${sid}` });
    cats.forEach((c, i) => {
      const y = i * lane;
      g.appendChild(svg("text", { x: 4, y: y + 16 }, c));
      g.appendChild(svg("line", { x1: left, x2: W - 10, y1: y + lane - 2, y2: y + lane - 2, stroke: "#2a3540" }));
      for (const entry of mine.filter((m) => m.latest.event.category === c)) {
        const w = entry.latest.event.window;
        const bar = svg("rect", {
          x: x(w.start_s), y: y + 4, width: Math.max(2, x(w.end_s) - x(w.start_s)), height: lane - 8,
          class: catClass(c), fill: "currentColor", "fill-opacity": isOpen(entry) ? 0.55 : 0.25,
        });
        bar.appendChild(svg("title", {}, `${c} ${w.start_s.toFixed(1)}–${w.end_s.toFixed(1)} s`));
        g.appendChild(bar);
        for (const m of entry.revs) {
          const dot = svg("circle", {
            cx: x(m.event.window.end_s), cy: y + lane - 4 - m.event.score * (lane - 8), r: 3,
            class: catClass(c), fill: "currentColor",
          });
          dot.appendChild(svg("title", {}, `${m.event.lifecycle} r${m.event.revision}: score ${m.event.score.toFixed(3)} at ${m.event.window.end_s.toFixed(1)} s`));
          g.appendChild(dot);
        }
      }
    });
    for (let t = 0; t <= end; t += Math.max(1, Math.ceil(end / 10))) {
      g.appendChild(svg("text", { x: x(t) - 4, y: H - 2 }, `${t}`));
    }
    const wrap = document.createElement("div");
    wrap.className = "timeline";
    wrap.dataset.stream = sid;
    const title = document.createElement("div");
    title.className = "title";
    title.textContent = sid;
    wrap.append(title, g);
    box.appendChild(wrap);
  }
}

function render() {
  if (!dirty) return;
  dirty = false;
  fillSelect($("f-category"), categories);
  fillSelect($("f-stream"), streamIds);
  renderStreams();
  renderCards();
  renderTimelines();
}

function tickAges() {
  for (const el of document.querySelectorAll(".card .age")) {
    if (el.dataset.since) el.textContent = `first seen ${ago(Number(el.dataset.since))}`;
  }
}

function connect() {
  const feed = new EventSource("/api/live");
  feed.onopen = () => {
    $("conn").textContent = "live";
    $("conn").className = "conn live";
  };
  feed.onerror = () => {
    $("conn").textContent = "reconnecting…";
    $("conn").className = "conn down";
  };
  feed.onmessage = (ev) => onMessage(JSON.parse(ev.data));
}

for (const id of ["f-category", "f-stream", "f-open"]) {
  $(id).addEventListener("change", () => { dirty = true; });
}
connect();
setInterval(render, 200); // at most five redraws a second, however fast events come
setInterval(tickAges, 1000);
