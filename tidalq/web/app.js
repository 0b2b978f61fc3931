// tidalq's page: the queue at a glance, live through /api/events (Server-Sent Events).
// Plain DOM, no build step; text from servers is set with textContent, never as HTML.
"use strict";

const API = "/api/download-queue";
const HISTORY_PAGE = 50;
let token = sessionStorage.getItem("tidalq-token") || "";
let historyShown = HISTORY_PAGE;
let refreshTimer = null;
let events = null;
let coverBase = null;  // the cover host the page's CSP allows images from

function headers(json) {
  const h = {};
  if (json) h["Content-Type"] = "application/json";
  if (token) h["Authorization"] = "Bearer " + token;
  return h;
}

async function call(method, path, body) {
  const response = await fetch(path, {method, headers: headers(body !== undefined),
                                      body: body === undefined ? undefined : JSON.stringify(body)});
  if (response.status === 401) {
    await askToken();
    return call(method, path, body);
  }
  let payload = null;
  try { payload = await response.json(); } catch (e) { payload = null; }
  if (!response.ok || !payload || payload.success === false) {
    throw new Error((payload && payload.error) || ("HTTP " + response.status));
  }
  return payload;
}

function askToken() {
  const dialog = document.getElementById("token-dialog");
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      token = document.getElementById("token").value;
      sessionStorage.setItem("tidalq-token", token);
      listen();
      resolve();
    }, {once: true});
    if (!dialog.open) dialog.showModal();
  });
}

function el(tag, attrs, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function titleOf(job) {
  const spec = job.job;
  const kind = spec.type;
  const name = kind === "track" ? spec.trackTitle : kind === "artist" ? spec.artistName
    : spec.albumTitle;
  const id = spec[kind + "Id"];
  if (!name) return kind + " " + id;
  return (spec.artistName && kind !== "artist" ? spec.artistName + " – " : "") + name;
}

function say(text, bad) {
  const message = document.getElementById("message");
  message.textContent = text;
  message.className = bad ? "error" : "";
}

function actionsFor(job) {
  const box = el("div", {class: "actions"});
  const add = (label, run) => {
    const button = el("button", {type: "button", "aria-label": label + " " + titleOf(job)},
                      label);
    button.addEventListener("click", async () => {
      button.disabled = true;
      try { await run(); say(label + ": " + titleOf(job)); }
      catch (e) { say(label + " failed: " + e.message, true); }
      scheduleRefresh(0);
    });
    box.append(button);
  };
  const act = (action) => () => call("PATCH", API + "/" + job.id, {action});
  const s = job.status;
  if (s === "queued" || s === "processing" || s === "paused") add("Cancel", act("cancel"));
  if (s === "queued" || s === "processing") add("Pause", act("pause"));
  if ((s === "queued" || s === "paused") && job.priority !== "high") {
    add("To top", () => call("PATCH", API + "/" + job.id, {action: "set_priority", priority: "high"}));
  }
  if (s === "paused") add("Resume", act("resume"));
  if (s === "failed" || s === "cancelled") add("Retry", act("retry"));
  if (s !== "queued" && s !== "processing") add("Remove", () => call("DELETE", API + "/" + job.id));
  return box;
}

function size(bytes) {
  const units = ["B", "kB", "MB", "GB"];
  let n = bytes, i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return (i ? n.toFixed(1) : String(Math.round(n))) + " " + units[i];
}

function span(seconds) {
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  return (h ? h + ":" + String(m).padStart(2, "0") : String(m)) + ":" + String(r).padStart(2, "0");
}

function cover(url, label) {
  // only from the cover host the CSP allows: anything else would be refused anyway
  if (!url || !coverBase || !url.startsWith(coverBase + "/")) {
    return el("div", {class: "cover none", "aria-hidden": "true"});
  }
  return el("img", {class: "cover", src: url, alt: label ? "cover of " + label : "",
                    loading: "lazy", width: "56", height: "56"});
}

function figures(job) {
  if (job.status === "processing") {
    const done = job.bytesDone ? size(job.bytesDone) + (job.bytesTotal ? " of " + size(job.bytesTotal) : "") : "";
    return [done, job.speedBps ? size(job.speedBps) + "/s" : "",
            job.etaS !== undefined ? "ETA " + span(job.etaS) : ""];
  }
  if (job.status === "completed") {
    return [job.fileSize ? size(job.fileSize) : "",
            job.downloadTimeMs ? "in " + span(job.downloadTimeMs / 1000) : ""];
  }
  return [];
}

function jobItem(job) {
  const item = el("li", {class: "job", "data-job": job.id, "data-status": job.status});
  item.append(cover(job.job.coverUrl, titleOf(job)));
  const body = el("div", {class: "body"});
  item.append(body);
  body.append(el("div", {class: "title"}, titleOf(job)));
  const bits = [job.job.type, job.job.quality,
                job.trackCount ? (job.completedTracks + "/" + job.trackCount + " tracks") : "",
                Math.round(job.progress * 100) + "%", ...figures(job),
                (job.status === "queued" || job.status === "paused") && job.priority &&
                  job.priority !== "normal" ? job.priority + " priority" : ""
               ].filter(Boolean);
  const meta = el("div", {class: "meta"});
  meta.append(el("span", {class: "status-" + job.status}, job.status), " · " + bits.join(" · "));
  body.append(meta);
  if (job.status === "processing") {
    body.append(el("progress", {max: "1", value: String(job.progress),
                                "aria-label": "progress of " + titleOf(job)}));
  }
  if (job.error) body.append(el("div", {class: "error"}, job.error));
  if (job.trackCount) body.append(trackDetails(job));
  body.append(actionsFor(job));
  return item;
}

const expanded = new Set();  // jobs whose tracks are shown: kept open across refreshes

function trackDetails(job) {
  const details = el("details");
  details.append(el("summary", {}, "tracks"));
  details.addEventListener("toggle", async () => {
    if (details.open) expanded.add(job.id); else expanded.delete(job.id);
    if (!details.open || details.dataset.loaded) return;
    details.dataset.loaded = "1";
    try {
      const full = (await call("GET", API + "/" + job.id)).job;
      const list = el("ol");
      for (const t of full.trackProgress || []) {
        list.append(el("li", {}, (t.trackTitle || t.title || t.trackId) + " — " +
                                 (t.state || t.status) + (t.error ? ": " + t.error : "")));
      }
      details.append(list);
    } catch (e) { details.append(el("p", {class: "error"}, e.message)); }
  });
  if (expanded.has(job.id)) details.open = true;  // its toggle event loads the tracks again
  return details;
}

function fill(id, jobs, empty) {
  const list = document.getElementById(id);
  list.replaceChildren(...(jobs.length ? jobs.map(jobItem) : [el("li", {class: "meta"}, empty)]));
}

async function refresh() {
  try {
    const dash = await call("GET", API + "/dashboard");
    coverBase = dash.coverBase ? dash.coverBase.replace(/\/+$/, "") : null;
    const q = dash.queue;
    document.getElementById("counts").textContent =
      `${q.queued} queued · ${q.processing} running · ${q.paused} paused · ` +
      `${q.completed} done · ${q.failed} failed`;
    const bps = dash.worker && dash.worker.downloadBps;
    document.getElementById("speed").textContent = [
      bps ? size(bps) + "/s" : "",
      dash.queueEtaS ? "queue done in about " + span(dash.queueEtaS) : ""].filter(Boolean).join(" · ");
    fill("running", dash.jobs.filter((j) => j.status === "processing"), "nothing running");
    fill("waiting", dash.jobs.filter((j) => j.status === "queued" || j.status === "paused"),
         "nothing waiting");
    const history = await call("GET", API + "?limit=" + historyShown);
    const done = history.jobs.filter((j) => !["queued", "processing", "paused"].includes(j.status));
    fill("history", done, "no history yet");
    document.getElementById("more").hidden = history.count < historyShown;
    const follows = await call("GET", "/api/follows");
    document.getElementById("follows").replaceChildren(...follows.follows.map((f) =>
      el("li", {class: "meta"}, `${f.kind} ${f.title || f.ref} — ${f.lastOutcome || "not checked yet"}`)));
  } catch (e) {
    document.getElementById("counts").textContent = "tidalq does not answer: " + e.message;
  }
}

function scheduleRefresh(delay) {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(refresh, delay === undefined ? 250 : delay);
}

function listen() {
  if (events) events.close();
  events = new EventSource("/api/events" + (token ? "?token=" + encodeURIComponent(token) : ""));
  events.addEventListener("job", () => scheduleRefresh());
}

const LINK_KINDS = {track: "track", album: "album", playlist: "playlist", artist: "artist"};

function addButton(label, link, name) {
  const button = el("button", {type: "button", "aria-label": label + " " + name}, label);
  button.addEventListener("click", async () => {
    const quality = document.getElementById("search-quality").value;
    try {
      const added = await call("POST", "/api/add", {link, quality: quality || null});
      searchSay((added.created ? "added " : "already queued: ") + name);
    } catch (e) { searchSay(e.message, true); }
    scheduleRefresh(0);
  });
  return button;
}

function searchSay(text, bad) {
  const said = document.getElementById("search-message");
  said.textContent = text;
  said.className = bad ? "error" : "";
}

function linkOf(kind, id) {
  return "https://tidal.com/browse/" + LINK_KINDS[kind] + "/" + id;
}

function resultCard(r) {
  const card = el("li", {class: "card", "data-kind": r.type});
  card.append(cover(r.coverUrl, r.title));
  const body = el("div", {class: "body"});
  card.append(body);
  body.append(el("div", {class: "title"}, r.title));
  body.append(el("div", {class: "meta"}, [r.artist, r.year, r.tracks ? r.tracks + " tracks" : "",
                                          r.quality, r.explicit ? "explicit" : ""]
                                          .filter(Boolean).join(" · ")));
  const actions = el("div", {class: "actions"});
  body.append(actions);
  if (r.type !== "artist") {
    actions.append(addButton("Add", linkOf(r.type, r.id), r.title));
    return card;
  }
  actions.append(addButton("Add all", linkOf("artist", r.id), r.title));
  const follow = el("button", {type: "button", "aria-label": "Follow " + r.title}, "Follow");
  follow.addEventListener("click", async () => {
    try {
      const answer = await call("POST", "/api/follows", {kind: "artist", id: r.id});
      searchSay((answer.created ? "following " : "already following ") + r.title);
    } catch (e) { searchSay(e.message, true); }
    scheduleRefresh(0);
  });
  const open = el("button", {type: "button", "aria-expanded": "false",
                             "aria-label": "Releases of " + r.title}, "Releases");
  const list = el("ul", {class: "releases", hidden: ""});
  open.addEventListener("click", async () => {
    const showing = open.getAttribute("aria-expanded") === "true";
    open.setAttribute("aria-expanded", String(!showing));
    list.hidden = showing;
    if (showing || list.dataset.loaded) return;
    list.dataset.loaded = "1";
    try {
      const found = await call("GET", "/api/artist/" + encodeURIComponent(r.id) + "/releases");
      list.replaceChildren(...found.releases.map((rel) => {
        const item = el("li", {});
        item.append(el("span", {}, rel.title + " (" + rel.kind + ") "),
                    addButton("Add", linkOf("album", rel.id), rel.title));
        return item;
      }));
      if (!found.releases.length) list.append(el("li", {class: "meta"}, "no releases"));
    } catch (e) { list.append(el("li", {class: "error"}, e.message)); }
  });
  actions.append(follow, open);
  body.append(list);
  return card;
}

async function runSearch(event) {
  event.preventDefault();
  const query = document.getElementById("query").value.trim();
  const kind = document.getElementById("kind").value;
  const results = document.getElementById("results");
  if (!query) return;
  searchSay("searching…");
  try {
    const found = await call("GET", "/api/search?q=" + encodeURIComponent(query) +
                             "&type=" + encodeURIComponent(kind));
    results.replaceChildren(...found.results.map(resultCard));
    searchSay(found.results.length ? found.results.length + " found" : "nothing found");
  } catch (e) {
    results.replaceChildren();
    searchSay(e.message, true);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("search").addEventListener("submit", runSearch);
  document.getElementById("add").addEventListener("submit", async (event) => {
    event.preventDefault();
    const link = document.getElementById("link");
    const quality = document.getElementById("quality").value;
    try {
      const added = await call("POST", "/api/add", {link: link.value, quality: quality || null});
      say("added " + added.jobId);
      link.value = "";
    } catch (e) { say(e.message, true); }
    scheduleRefresh(0);
  });
  document.getElementById("follow-favourites").addEventListener("click", async () => {
    const said = document.getElementById("follow-message");
    try {
      const answer = await call("POST", "/api/follows", {kind: "favorites"});
      said.textContent = answer.created ? "following your favourites" : "already following them";
      said.className = "";
    } catch (e) {
      said.textContent = e.message;
      said.className = "error";
    }
    scheduleRefresh(0);
  });
  document.getElementById("more").addEventListener("click", () => {
    historyShown += HISTORY_PAGE;
    scheduleRefresh(0);
  });
  listen();
  refresh();
});
