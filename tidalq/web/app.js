// tidalq's page: the queue at a glance, live through /api/events (Server-Sent Events).
// Plain DOM, no build step; text from servers is set with textContent, never as HTML.
"use strict";

const API = "/api/download-queue";
const HISTORY_PAGE = 50;
let token = sessionStorage.getItem("tidalq-token") || "";
let historyShown = HISTORY_PAGE;
let refreshTimer = null;
let events = null;

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
  if (s === "paused") add("Resume", act("resume"));
  if (s === "failed" || s === "cancelled") add("Retry", act("retry"));
  if (s !== "queued" && s !== "processing") add("Remove", () => call("DELETE", API + "/" + job.id));
  return box;
}

function jobItem(job) {
  const item = el("li", {class: "job", "data-job": job.id, "data-status": job.status});
  item.append(el("div", {class: "title"}, titleOf(job)));
  const bits = [job.job.type, job.job.quality,
                job.trackCount ? (job.completedTracks + "/" + job.trackCount + " tracks") : "",
                Math.round(job.progress * 100) + "%"].filter(Boolean);
  const meta = el("div", {class: "meta"});
  meta.append(el("span", {class: "status-" + job.status}, job.status), " · " + bits.join(" · "));
  item.append(meta);
  if (job.status === "processing") {
    item.append(el("progress", {max: "1", value: String(job.progress),
                                "aria-label": "progress of " + titleOf(job)}));
  }
  if (job.error) item.append(el("div", {class: "error"}, job.error));
  if (job.trackCount) item.append(trackDetails(job));
  item.append(actionsFor(job));
  return item;
}

function trackDetails(job) {
  const details = el("details");
  details.append(el("summary", {}, "tracks"));
  details.addEventListener("toggle", async () => {
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
  return details;
}

function fill(id, jobs, empty) {
  const list = document.getElementById(id);
  list.replaceChildren(...(jobs.length ? jobs.map(jobItem) : [el("li", {class: "meta"}, empty)]));
}

async function refresh() {
  try {
    const dash = await call("GET", API + "/dashboard");
    const q = dash.queue;
    document.getElementById("counts").textContent =
      `${q.queued} queued · ${q.processing} running · ${q.paused} paused · ` +
      `${q.completed} done · ${q.failed} failed`;
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

document.addEventListener("DOMContentLoaded", () => {
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
