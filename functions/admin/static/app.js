// The o7tracker dashboard: plain ES modules over the admin API, no build step.
// The chart is uPlot 1.6.32 (MIT), vendored from its npm package: see uPlot.LICENSE.
import uPlot from "./uPlot.esm.js";

// Relative to this file, so the page works wherever the admin function is mounted.
const API = new URL("../", import.meta.url);
const TZ = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
const PAGE_SIZE = 20;
const PLATFORMS = [
  { name: "Android", field: "android_click_count", label: "Android", color: "#1f9d55" },
  { name: "IPhone", field: "iphone_click_count", label: "iPhone", color: "#2563eb" },
  { name: "WindowsPhone", field: "windowsphone_click_count", label: "Windows Phone", color: "#d97706" },
];
const BOTS = { field: "bot_click_count", label: "Bots", color: "#6b7280" };
const INACTIVE = { field: "inactive_click_count", label: "Inactive", color: "#9333ea" };
const VISITORS = { field: "unique_visitors", label: "Unique visitors", color: "#db2777" };
const STATUSES = [
  { value: "active", label: "Active" },
  { value: "paused", label: "Paused" },
  { value: "archived", label: "Archived" },
];

const numberFormat = new Intl.NumberFormat();
const dateTimeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short", timeZone: TZ });
const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeZone: TZ });
const dayLabel = new Intl.DateTimeFormat(undefined, { weekday: "short", day: "numeric", month: "short", timeZone: TZ });
const tickDay = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short", timeZone: TZ });
const tickHour = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", timeZone: TZ });

const state = {
  campaigns: new Map(), // id -> campaign, in list order
  next: null,
  showArchived: false,
  selected: null, // id of the campaign shown in the detail panel
  range: { days: 7, granularity: "day" },
  chart: null,
  statsRequest: 0,
};

class ApiError extends Error {
  constructor(status, msg) {
    super(msg);
    this.status = status;
  }
}

// The answer's JSON and its ETag; with ifMatch, the change is made only if the campaign is still that version.
async function request(path, { method = "GET", body, ifMatch } = {}) {
  const headers = { Accept: "application/json" };
  if (body) headers["Content-Type"] = "application/json";
  if (ifMatch) headers["If-Match"] = ifMatch;
  const response = await fetch(new URL(path, API), {
    method,
    credentials: "same-origin",
    headers,
    body: body ? JSON.stringify(body) : undefined,
  });
  const etag = response.headers.get("ETag");
  if (response.status === 204) return { payload: null, etag };
  let payload = null;
  try {
    payload = await response.json();
  } catch {
    // a proxy's HTML error page, say: the status alone has to do
  }
  if (!response.ok) {
    throw new ApiError(response.status, payload?.msg || `The server answered ${response.status} ${response.statusText}.`);
  }
  return { payload, etag };
}

async function api(path, options) {
  return (await request(path, options)).payload;
}

const $ = (selector, root = document) => root.querySelector(selector);
const formatCount = (n) => numberFormat.format(n ?? 0);

function asOfText(asOf) {
  return asOf ? `Counted up to ${dateTimeFormat.format(new Date(asOf))}` : "No clicks counted yet";
}

function describeUrl(url) {
  try {
    const parsed = new URL(url);
    const rest = `${parsed.pathname}${parsed.search}`;
    return { host: parsed.host, rest: rest === "/" ? "" : rest };
  } catch {
    return { host: url, rest: "" };
  }
}

function showError(element, message) {
  element.textContent = message;
  element.hidden = !message;
}

// A 412: the campaign changed (in another tab, by someone else) after this page read it. What was
// asked is not done; the way on is to read it again.
function showChangedElsewhere(element, notDone, campaignId, { reopenEdit = false } = {}) {
  showError(element, `${notDone}: this campaign was changed elsewhere after you opened it. ` +
    "Reload it to see the change, then decide again. ");
  const reload = document.createElement("button");
  reload.type = "button";
  reload.className = "button";
  reload.textContent = "Reload the campaign";
  reload.addEventListener("click", async () => {
    await showCampaign(campaignId);
    renderList();
    const body = $("#detail-body");
    if (reopenEdit && !body.hidden) {
      $('[data-slot="edit"]', body).open = true;
      $('[data-slot="edit-status"]', body).textContent = "Reloaded: this is the campaign as it is now.";
    }
  });
  element.append(reload);
  reload.focus();
}

// Whether the campaign counts its clicks now, as its counts show; the server decides each click by its own time.
function lifecycleState(campaign, now = Date.now()) {
  if (campaign.status === "archived") return { key: "archived", label: "Archived" };
  if (campaign.status === "paused") return { key: "paused", label: "Paused" };
  if (campaign.starts_at && Date.parse(campaign.starts_at) > now) return { key: "scheduled", label: "Not started" };
  if (campaign.ends_at && Date.parse(campaign.ends_at) <= now) return { key: "ended", label: "Ended" };
  if (campaign.max_clicks !== null && campaign.click_count >= campaign.max_clicks) return { key: "capped", label: "Capped" };
  return { key: "active", label: "Active" };
}

function lifecycleText(campaign) {
  const parts = [];
  if (campaign.starts_at) parts.push(`from ${dateTimeFormat.format(new Date(campaign.starts_at))}`);
  if (campaign.ends_at) parts.push(`until ${dateTimeFormat.format(new Date(campaign.ends_at))}`);
  const dates = parts.length ? `Counts clicks ${parts.join(" ")}` : "Counts clicks with no start or end";
  const cap = campaign.max_clicks === null ? "no cap" : `at most ${formatCount(campaign.max_clicks)} clicks`;
  const fallback = campaign.fallback_url ?? "the global fallback";
  return `${dates}, ${cap}. Clicks it cannot count go to ${fallback} and count as inactive.`;
}

// ---- campaign list ------------------------------------------------------

async function loadList({ reset }) {
  const status = $("#list-status");
  const more = $("#load-more");
  if (reset) {
    state.campaigns.clear();
    state.next = null;
  }
  const params = new URLSearchParams({ limit: String(PAGE_SIZE), ...listFilter() });
  if (state.next) params.set("cursor", state.next);
  status.textContent = "Loading campaigns…";
  more.disabled = true;
  try {
    const page = await api(`campaigns?${params}`);
    for (const campaign of page.campaigns) state.campaigns.set(campaign.id, campaign);
    state.next = page.next;
    status.textContent = "";
  } catch (error) {
    status.textContent = `Could not load campaigns: ${error.message}`;
  } finally {
    more.disabled = false;
  }
  renderList();
}

// Without a status the list leaves archived campaigns out.
function listFilter() {
  return state.showArchived ? { status: STATUSES.map((s) => s.value).join(",") } : {};
}

function listed(campaign) {
  return state.showArchived || campaign.status !== "archived";
}

function renderList() {
  const body = $("#campaigns tbody");
  body.replaceChildren(...[...state.campaigns.values()].map(campaignRow));
  $("#list-empty").hidden = state.campaigns.size > 0;
  $("#campaigns").hidden = state.campaigns.size === 0;
  $("#load-more").hidden = !state.next;
  const asOfs = [...state.campaigns.values()].map((c) => c.as_of).filter(Boolean).sort();
  $("#list-as-of").textContent = asOfs.length ? `${asOfText(asOfs.at(-1))} · ` : "";
}

function campaignRow(campaign) {
  const row = document.createElement("tr");
  row.dataset.id = String(campaign.id);
  if (campaign.id === state.selected) row.setAttribute("aria-current", "true");
  const { host, rest } = describeUrl(campaign.redirect_url);

  const name = document.createElement("td");
  const link = document.createElement("a");
  link.href = `#campaign/${campaign.id}`;
  link.className = "row-link";
  link.innerHTML = `<span class="host"></span><span class="path"></span>`;
  link.querySelector(".host").textContent = host;
  link.querySelector(".path").textContent = rest;
  link.title = campaign.redirect_url;
  const badges = document.createElement("div");
  badges.className = "badges";
  for (const platform of PLATFORMS) {
    if (!campaign.platforms.includes(platform.name)) continue;
    const badge = document.createElement("span");
    badge.className = `badge ${platform.name.toLowerCase()}`;
    badge.textContent = platform.label;
    badges.append(badge);
  }
  const lifecycle = lifecycleState(campaign);
  if (lifecycle.key !== "active") {
    const badge = document.createElement("span");
    badge.className = `badge state ${lifecycle.key}`;
    badge.textContent = lifecycle.label;
    badges.prepend(badge);
  }
  name.append(link, badges);

  const clicks = document.createElement("td");
  clicks.className = "num strong";
  clicks.dataset.field = "click_count";
  clicks.textContent = formatCount(campaign.click_count);
  const bots = document.createElement("td");
  bots.className = "num muted bots-col";
  bots.dataset.field = "bot_click_count";
  bots.textContent = formatCount(campaign.bot_click_count);
  const trend = document.createElement("td");
  trend.className = "trend-col";
  trend.append(sparklineFor(campaign.id));

  row.append(name, clicks, bots, trend);
  row.addEventListener("click", (event) => {
    if (event.target.closest("a")) return;
    location.hash = `#campaign/${campaign.id}`;
  });
  return row;
}

const sparklines = new Map(); // id -> element, so re-rendering the list does not refetch

function sparklineFor(id) {
  if (!sparklines.has(id)) {
    const holder = document.createElement("span");
    holder.className = "sparkline loading";
    holder.setAttribute("role", "img");
    holder.setAttribute("aria-label", "Clicks over the last 7 days: loading");
    sparklines.set(id, holder);
    // the API's default range: the last 7 days, by day, ending now
    api(`campaigns/${id}/stats?${new URLSearchParams({ granularity: "day", tz: TZ })}`)
      .then((stats) => drawSparkline(holder, stats.buckets))
      .catch(() => {
        holder.classList.remove("loading");
        holder.setAttribute("aria-label", "Clicks over the last 7 days: unavailable");
        holder.textContent = "–";
      });
  }
  return sparklines.get(id);
}

function drawSparkline(holder, buckets) {
  const values = buckets.map((b) => b.click_count);
  const width = 112;
  const height = 28;
  const max = Math.max(1, ...values);
  const step = values.length > 1 ? width / (values.length - 1) : width;
  const points = values.map((v, i) => [i * step, height - 2 - (v / max) * (height - 4)]);
  const line = points.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(" ");
  const svgNs = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(svgNs, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("width", String(width));
  svg.setAttribute("height", String(height));
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("aria-hidden", "true");
  const area = document.createElementNS(svgNs, "polygon");
  area.setAttribute("points", `0,${height} ${line} ${width},${height}`);
  area.setAttribute("class", "spark-area");
  const path = document.createElementNS(svgNs, "polyline");
  path.setAttribute("points", line);
  path.setAttribute("class", "spark-line");
  svg.append(area, path);
  const total = values.reduce((a, b) => a + b, 0);
  const days = buckets.map((b, i) => `${dayLabel.format(new Date(b.start))}: ${values[i]}`).join(", ");
  holder.classList.remove("loading");
  holder.setAttribute("aria-label", `${formatCount(total)} clicks over the last 7 days (${days})`);
  holder.title = `${formatCount(total)} clicks in the last 7 days`;
  holder.replaceChildren(svg);
}

// ---- campaign forms ------------------------------------------------------

function fillPlatformFields(form, prefix, campaign) {
  const checks = $("[data-platform-checks]", form);
  const urls = $("[data-platform-urls]", form);
  checks.replaceChildren();
  urls.replaceChildren();
  for (const platform of PLATFORMS) {
    const id = `${prefix}-platform-${platform.name}`;
    const label = document.createElement("label");
    label.className = "check";
    label.htmlFor = id;
    const box = document.createElement("input");
    box.type = "checkbox";
    box.id = id;
    box.name = "platforms";
    box.value = platform.name;
    box.checked = campaign ? campaign.platforms.includes(platform.name) : true;
    label.append(box, ` ${platform.label}`);
    checks.append(label);

    const field = document.createElement("div");
    field.className = "field";
    const urlId = `${prefix}-url-${platform.name}`;
    const urlLabel = document.createElement("label");
    urlLabel.htmlFor = urlId;
    urlLabel.textContent = `${platform.label} destination`;
    const input = document.createElement("input");
    input.type = "url";
    input.inputMode = "url";
    input.id = urlId;
    input.name = `url-${platform.name}`;
    input.autocomplete = "off";
    input.placeholder = "Same as the redirect URL";
    input.value = campaign?.platform_urls?.[platform.name] ?? "";
    field.append(urlLabel, input);
    urls.append(field);
  }
}

// A moment as a datetime-local input shows it: wall-clock time in the page's zone, to the minute.
function localInputValue(iso) {
  if (!iso) return "";
  const parts = Object.fromEntries(
    new Intl.DateTimeFormat("en-CA", {
      timeZone: TZ, year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit",
      hourCycle: "h23",
    }).formatToParts(new Date(iso)).map((p) => [p.type, p.value]),
  );
  return `${parts.year}-${parts.month}-${parts.day}T${parts.hour}:${parts.minute}`;
}

function labelled(id, text, input, hint) {
  const field = document.createElement("div");
  field.className = "field";
  const label = document.createElement("label");
  label.htmlFor = id;
  label.textContent = text;
  input.id = id;
  field.append(label, input);
  if (hint) {
    const note = document.createElement("p");
    note.className = "hint";
    note.id = `${id}-hint`;
    note.textContent = hint;
    input.setAttribute("aria-describedby", note.id);
    field.append(note);
  }
  return field;
}

function fillLifecycleFields(form, prefix, campaign) {
  const holder = $("[data-lifecycle-fields]", form);
  const status = document.createElement("select");
  status.name = "status";
  for (const option of STATUSES) status.add(new Option(option.label, option.value));
  status.value = campaign?.status ?? "active";
  const moment = (name, iso) => {
    const input = document.createElement("input");
    input.type = "datetime-local";
    input.name = name;
    input.value = localInputValue(iso);
    // sent back as stored unless edited, so that a time with seconds is not cut to the minute
    input.dataset.stored = iso ?? "";
    input.dataset.shown = input.value;
    return input;
  };
  const typed = (name, type, inputMode, placeholder) => {
    const input = document.createElement("input");
    input.type = type;
    input.inputMode = inputMode;
    input.name = name;
    input.autocomplete = "off";
    input.placeholder = placeholder;
    input.value = campaign?.[name] ?? "";
    return input;
  };
  const cap = typed("max_clicks", "text", "numeric", "No cap");
  const fallback = typed("fallback_url", "url", "url", "The global fallback");
  const row = document.createElement("div");
  row.className = "field-row";
  row.append(
    labelled(`${prefix}-starts_at`, "Start", moment("starts_at", campaign?.starts_at), `Empty: no start. Times in ${TZ}.`),
    labelled(`${prefix}-ends_at`, "End", moment("ends_at", campaign?.ends_at), "Empty: no end."),
  );
  holder.replaceChildren(
    labelled(`${prefix}-status`, "Status", status, "Only an active campaign counts its clicks."),
    row,
    labelled(`${prefix}-max_clicks`, "Click cap", cap,
      "Stops counting once this many clicks are counted (it may run over by the clicks of a minute or two)."),
    labelled(`${prefix}-fallback_url`, "Fallback URL", fallback,
      "Where clicks that cannot count go: paused, outside the dates, over the cap, other platforms."),
  );
}

function momentValue(input) {
  if (input.value === input.dataset.shown) return input.dataset.stored || null;
  return input.value ? new Date(input.value).toISOString() : null;
}

// What the form says, sent as typed: the server validates and its message is shown.
function formBody(form) {
  const data = new FormData(form);
  const platforms = data.getAll("platforms");
  const platformUrls = {};
  for (const platform of platforms) {
    const url = String(data.get(`url-${platform}`) ?? "").trim();
    if (url) platformUrls[platform] = url;
  }
  const cap = String(data.get("max_clicks") ?? "").trim();
  const fallback = String(data.get("fallback_url") ?? "").trim();
  return {
    redirect_url: String(data.get("redirect_url") ?? "").trim(),
    platforms,
    platform_urls: platformUrls,
    forward_query: form.elements.forward_query.checked,
    status: data.get("status"),
    starts_at: momentValue(form.elements.starts_at),
    ends_at: momentValue(form.elements.ends_at),
    max_clicks: cap === "" ? null : /^\d+$/.test(cap) ? Number(cap) : cap,
    fallback_url: fallback || null,
  };
}

async function submitForm(form, errorBox, send, explain = (error) => showError(errorBox, error.message)) {
  const button = $("button[type=submit]", form);
  button.disabled = true;
  showError(errorBox, "");
  form.removeAttribute("aria-invalid");
  try {
    return await send(formBody(form));
  } catch (error) {
    explain(error);
    if (error.status !== 412) form.setAttribute("aria-invalid", "true"); // a 412 is no fault of what was typed
    return null;
  } finally {
    button.disabled = false;
  }
}

function setUpCreateForm() {
  const form = $("#create-form");
  fillPlatformFields(form, "create", null);
  fillLifecycleFields(form, "create", null);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const created = await submitForm(form, $("#create-error"), (body) =>
      api("campaigns", { method: "POST", body }),
    );
    if (!created) return;
    form.reset();
    fillLifecycleFields(form, "create", null);
    $("#create-panel").open = false;
    if (listed(created)) state.campaigns = new Map([[created.id, created], ...state.campaigns]);
    renderList();
    location.hash = `#campaign/${created.id}`;
  });
}

// ---- detail panel --------------------------------------------------------

async function showCampaign(id) {
  state.selected = id;
  for (const row of document.querySelectorAll("#campaigns tbody tr")) {
    if (row.dataset.id === String(id)) row.setAttribute("aria-current", "true");
    else row.removeAttribute("aria-current");
  }
  const empty = $("#detail-empty");
  const body = $("#detail-body");
  $("#detail").setAttribute("aria-labelledby", "detail-title");
  if (id === null) {
    destroyChart();
    empty.hidden = false;
    body.hidden = true;
    return;
  }
  let campaign, etag;
  try {
    ({ payload: campaign, etag } = await request(`campaigns/${id}`));
  } catch (error) {
    destroyChart();
    empty.hidden = false;
    body.hidden = true;
    $("h2", empty).textContent = error.status === 404 ? "Campaign not found" : "Could not load the campaign";
    $("p", empty).textContent = error.message;
    return;
  }
  if (state.selected !== id) return;
  state.campaigns.set(id, { ...state.campaigns.get(id), ...campaign });
  renderDetail(campaign, etag);
  empty.hidden = true;
  body.hidden = false;
  $("#detail").setAttribute("aria-labelledby", "campaign-title");
  loadStats(campaign);
}

// etag: the campaign's as read, sent back with an edit or a delete so that neither undoes a change unseen.
function renderDetail(campaign, etag) {
  destroyChart();
  const body = $("#detail-body");
  body.replaceChildren($("#detail-template").content.cloneNode(true));
  const slot = (name) => $(`[data-slot="${name}"]`, body);

  const title = slot("title");
  const link = document.createElement("a");
  link.href = campaign.redirect_url;
  link.rel = "noopener noreferrer";
  link.target = "_blank";
  link.textContent = campaign.redirect_url;
  title.replaceChildren(link);
  slot("id").textContent = `#${campaign.id}`;
  slot("created").textContent = dateFormat.format(new Date(campaign.created_at));
  const lifecycle = lifecycleState(campaign);
  const stateBadge = document.createElement("span");
  stateBadge.className = `badge state ${lifecycle.key}`;
  stateBadge.textContent = lifecycle.label;
  slot("lifecycle").replaceChildren(stateBadge, ` ${lifecycleText(campaign)}`);
  for (const dd of body.querySelectorAll(".tiles dd[data-field]")) dd.textContent = formatCount(campaign[dd.dataset.field]);
  const inactiveSplit = PLATFORMS.filter((p) => campaign[inactiveField(p)] > 0)
    .map((p) => `${p.label} ${formatCount(campaign[inactiveField(p)])}`);
  slot("inactive-split").textContent = inactiveSplit.length ? `Inactive clicks by platform: ${inactiveSplit.join(", ")}.` : "";
  for (const platform of PLATFORMS) {
    const tile = $(`.tile.${platform.name.toLowerCase()}`, body);
    tile.classList.toggle("untargeted", !campaign.platforms.includes(platform.name));
  }
  slot("as-of").textContent = asOfText(campaign.as_of);

  for (const input of body.querySelectorAll("input[name=range], input[name=granularity]")) {
    input.checked = input.value === String(state.range[input.name === "range" ? "days" : "granularity"]);
    input.addEventListener("change", () => {
      if (input.name === "range") state.range.days = Number(input.value);
      else state.range.granularity = input.value;
      loadStats(campaign);
    });
  }

  slot("forwarding").textContent = campaign.forward_query
    ? "A click’s query parameters are forwarded to the destination."
    : "";
  renderLinks(slot("links"), slot("copy-status"), campaign);
  setUpPause(body, campaign, etag);
  setUpEditForm(body, campaign, etag);
  setUpDelete(body, campaign, etag);
}

function inactiveField(platform) {
  return `${platform.name.toLowerCase()}_inactive_click_count`;
}

// A changed campaign in the list (or out of it, once archived and archived ones are hidden) and in the detail.
function showChanged(updated, etag) {
  if (listed(updated)) state.campaigns.set(updated.id, updated);
  else state.campaigns.delete(updated.id);
  renderList();
  renderDetail(updated, etag);
  loadStats(updated);
}

const TOGGLES = {
  active: { action: "Pause", notDone: "Not paused" },
  paused: { action: "Resume", notDone: "Not resumed" },
  archived: { action: "Restore", notDone: "Not restored" },
};

function setUpPause(body, campaign, etag) {
  const button = $('[data-action="toggle-pause"]', body);
  const errorBox = $('[data-slot="pause-error"]', body);
  const next = campaign.status === "active" ? "paused" : "active";
  const toggle = TOGGLES[campaign.status];
  button.textContent = toggle.action;
  button.setAttribute("aria-describedby", "campaign-title");
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      const answer = await request(`campaigns/${campaign.id}`, {
        method: "PUT", body: { status: next }, ifMatch: etag,
      });
      showChanged(answer.payload, answer.etag);
      $('[data-action="toggle-pause"]', $("#detail-body")).focus();
    } catch (error) {
      if (error.status === 412) showChangedElsewhere(errorBox, toggle.notDone, campaign.id);
      else showError(errorBox, error.message);
      button.disabled = false;
    }
  });
}

function renderLinks(list, status, campaign) {
  const links = campaign.tracking_links ?? {};
  list.replaceChildren();
  for (const platform of PLATFORMS) {
    const url = links[platform.name];
    if (!url) continue;
    const item = document.createElement("li");
    item.className = `link ${platform.name.toLowerCase()}`;
    const id = `link-${platform.name}`;
    const label = document.createElement("label");
    label.htmlFor = id;
    label.textContent = platform.label;
    const input = document.createElement("input");
    input.id = id;
    input.readOnly = true;
    input.value = url;
    input.dataset.platform = platform.name;
    input.addEventListener("focus", () => input.select());
    const button = document.createElement("button");
    button.type = "button";
    button.className = "button";
    button.textContent = "Copy";
    button.setAttribute("aria-label", `Copy the ${platform.label} tracking link`);
    button.addEventListener("click", async () => {
      const copied = await copyText(url, input);
      status.textContent = copied ? `${platform.label} link copied.` : "Copying failed: select the link and copy it.";
      button.textContent = copied ? "Copied" : "Copy";
      setTimeout(() => (button.textContent = "Copy"), 2000);
    });
    const row = document.createElement("div");
    row.className = "link-row";
    row.append(label, input, button);
    const body = document.createElement("div");
    body.className = "link-body";
    body.append(row, qrDownloads(campaign.id, platform));
    item.append(qrImage(campaign.id, platform), body);
    list.append(item);
  }
  if (!list.children.length) list.innerHTML = "<li class=muted>This campaign targets no platform.</li>";
}

// Same origin, so the browser sends the credentials it has and the page's policy allows them.
function qrUrl(id, platform, kind, scale) {
  const params = new URLSearchParams({ platform: platform.name });
  if (scale) params.set("scale", String(scale));
  return new URL(`campaigns/${id}/qr.${kind}?${params}`, API).href;
}

function qrImage(id, platform) {
  const image = document.createElement("img");
  image.className = "qr";
  image.src = qrUrl(id, platform, "svg");
  image.alt = `QR code of the ${platform.label} tracking link`;
  image.width = image.height = 112;
  return image;
}

function qrDownloads(id, platform) {
  const download = (kind, scale, text) => {
    const link = document.createElement("a");
    link.href = qrUrl(id, platform, kind, scale);
    link.download = ""; // the file name the server gives
    link.textContent = text;
    link.setAttribute("aria-label", `Download the ${platform.label} QR code as ${text}`);
    return link;
  };
  const downloads = document.createElement("p");
  downloads.className = "qr-downloads";
  downloads.append("QR code: ", download("png", 10, "PNG"), " · ", download("svg", null, "SVG"));
  return downloads;
}

async function copyText(text, input) {
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch {
      // denied (no user gesture, or a policy): fall back to the selection
    }
  }
  input.focus();
  input.select();
  try {
    return document.execCommand("copy");
  } catch {
    return false;
  }
}

function setUpEditForm(body, campaign, etag) {
  const form = $('[data-slot="edit-form"]', body);
  const status = $('[data-slot="edit-status"]', body);
  const errorBox = $("#edit-error", body);
  fillPlatformFields(form, "edit", campaign);
  fillLifecycleFields(form, "edit", campaign);
  form.elements.redirect_url.value = campaign.redirect_url;
  form.elements.forward_query.checked = campaign.forward_query;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    status.textContent = "";
    const answer = await submitForm(
      form,
      errorBox,
      (values) => request(`campaigns/${campaign.id}`, { method: "PUT", body: values, ifMatch: etag }),
      (error) =>
        error.status === 412
          ? showChangedElsewhere(errorBox, "Not saved", campaign.id, { reopenEdit: true })
          : showError(errorBox, error.message),
    );
    if (!answer) return;
    showChanged(answer.payload, answer.etag);
    const saved = $('[data-slot="edit-status"]', $("#detail-body"));
    $('[data-slot="edit"]', $("#detail-body")).open = true;
    saved.textContent = "Saved.";
  });
}

function setUpDelete(body, campaign, etag) {
  const confirmBox = $('[data-slot="confirm"]', body);
  const ask = $('[data-action="ask-delete"]', body);
  ask.addEventListener("click", () => {
    confirmBox.hidden = false;
    $('[data-action="cancel-delete"]', confirmBox).focus();
  });
  $('[data-action="cancel-delete"]', confirmBox).addEventListener("click", () => {
    confirmBox.hidden = true;
    ask.focus();
  });
  $('[data-action="delete"]', confirmBox).addEventListener("click", async () => {
    const errorBox = $('[data-slot="delete-error"]', confirmBox);
    try {
      await request(`campaigns/${campaign.id}`, { method: "DELETE", ifMatch: etag });
    } catch (error) {
      if (error.status === 412) {
        showChangedElsewhere(errorBox, "Not deleted", campaign.id);
        return;
      }
      // already gone is what was asked for
      if (error.status !== 404) {
        showError(errorBox, error.message);
        return;
      }
    }
    state.campaigns.delete(campaign.id);
    sparklines.delete(campaign.id);
    renderList();
    $("#list-status").textContent = `Campaign #${campaign.id} deleted.`;
    history.replaceState(null, "", location.pathname + location.search);
    showCampaign(null);
    $("#list-title").focus();
  });
}

// ---- stats chart ---------------------------------------------------------

// The start of the range as a naive date or datetime, which the API reads in tz.
function rangeStart({ days, granularity }) {
  const parts = (date) =>
    Object.fromEntries(
      new Intl.DateTimeFormat("en-CA", {
        timeZone: TZ, year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", hourCycle: "h23",
      }).formatToParts(date).map((p) => [p.type, p.value]),
    );
  if (granularity === "day") {
    const today = parts(new Date());
    const start = new Date(Date.UTC(Number(today.year), Number(today.month) - 1, Number(today.day) - (days - 1)));
    return start.toISOString().slice(0, 10);
  }
  const start = parts(new Date(Date.now() - days * 86400e3 + 3600e3));
  return `${start.year}-${start.month}-${start.day}T${start.hour}:00`;
}

function statsQuery(range, extra = {}) {
  return new URLSearchParams({ from: rangeStart(range), granularity: range.granularity, tz: TZ, ...extra });
}

async function loadStats(campaign) {
  const body = $("#detail-body");
  const slot = (name) => $(`[data-slot="${name}"]`, body);
  const range = { ...state.range };
  const request = ++state.statsRequest;
  const unit = range.granularity === "day" ? "day" : "hour";
  slot("chart-title").textContent = `Clicks by ${unit}, last ${range.days} days`;
  slot("stats-csv").href = new URL(`campaigns/${campaign.id}/stats?${statsQuery(range, { format: "csv" })}`, API).href;
  slot("chart-status").textContent = "Loading clicks…";
  let stats;
  try {
    stats = await api(`campaigns/${campaign.id}/stats?${statsQuery(range)}`);
  } catch (error) {
    if (request === state.statsRequest) slot("chart-status").textContent = `Could not load clicks: ${error.message}`;
    return;
  }
  if (request !== state.statsRequest || state.selected !== campaign.id) return;
  slot("chart-status").textContent = "";
  slot("as-of").textContent = asOfText(stats.as_of);
  const totals = stats.totals;
  // The range's visitors are a union over its buckets, not their sum: each counts once.
  slot("range-visitors").textContent = formatCount(totals[VISITORS.field]);
  slot("visitors-range").textContent = `last ${range.days} days`;
  slot("range-totals").textContent =
    `${formatCount(totals.click_count)} clicks by ${formatCount(totals[VISITORS.field])} unique visitors, ` +
    `${formatCount(totals.bot_click_count)} bot clicks and ${formatCount(totals.inactive_click_count)} inactive, ` +
    (range.granularity === "day"
      ? dateFormat.formatRange(new Date(stats.from), new Date(Date.parse(stats.to) - 1)) // to is exclusive
      : dateTimeFormat.formatRange(new Date(stats.from), new Date(stats.to)));
  drawChart(slot("chart"), stats, campaign);
}

function destroyChart() {
  if (state.chart) {
    state.chart.destroy();
    state.chart = null;
  }
}

function drawChart(holder, stats, campaign) {
  destroyChart();
  const hourly = stats.granularity === "hour";
  const xs = stats.buckets.map((b) => Date.parse(b.start) / 1000);
  const shown = PLATFORMS.filter((p) => campaign.platforms.includes(p.name) || stats.totals[p.field] > 0);
  // bots always; inactive clicks once there are any, or when the campaign does not count now
  const apart = [BOTS, ...(stats.totals[INACTIVE.field] > 0 || lifecycleState(campaign).key !== "active" ? [INACTIVE] : [])];
  const series = [
    {},
    ...shown.map((p) => ({
      label: p.label,
      stroke: p.color,
      fill: `${p.color}1a`,
      width: 2,
      points: { show: !hourly, size: 6 },
    })),
    {
      label: VISITORS.label,
      stroke: VISITORS.color,
      width: 2.5,
      dash: [8, 5], // long dashes: where visitors and a platform's clicks are equal, both lines still show
      points: { show: !hourly, size: 6 },
    },
    ...apart.map((series) => ({
      label: `${series.label} (not in clicks)`,
      stroke: series.color,
      width: 1.5,
      dash: [6, 4],
      points: { show: !hourly, size: 5 },
    })),
  ];
  const data = [xs, ...[...shown, VISITORS, ...apart].map((p) => stats.buckets.map((b) => b[p.field]))];
  const max = Math.max(4, ...data.slice(1).flat());
  const options = {
    width: Math.max(280, holder.clientWidth),
    height: 260,
    tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), TZ),
    series,
    scales: { x: { time: true }, y: { range: [0, Math.ceil(max * 1.1)] } },
    axes: [
      {
        stroke: "#4b5563",
        grid: { stroke: "#eef0f3" },
        ticks: { stroke: "#d1d5db" },
        // the browser's language and the page's zone, not uPlot's US-style defaults
        space: 64,
        values: (u, ticks, axisIndex, space, incr) =>
          ticks.map((t) => {
            const date = new Date(t * 1000);
            return incr >= 86400 ? tickDay.format(date) : `${tickHour.format(date)}\n${tickDay.format(date)}`;
          }),
      },
      {
        stroke: "#4b5563",
        grid: { stroke: "#eef0f3" },
        ticks: { show: false },
        size: 48,
        values: (u, ticks) => ticks.map((t) => (Number.isInteger(t) ? formatCount(t) : "")),
      },
    ],
    legend: { live: false },
    cursor: { drag: { x: false, y: false } },
  };
  state.chart = new uPlot(options, data, holder);
  const summary = shown.map((p) => `${p.label} ${formatCount(stats.totals[p.field])}`).join(", ");
  holder.setAttribute(
    "aria-label",
    `Chart of clicks by ${hourly ? "hour" : "day"}: ${summary}; unique visitors ` +
      `${formatCount(stats.totals[VISITORS.field])}; bots ${formatCount(stats.totals.bot_click_count)}; ` +
      `inactive ${formatCount(stats.totals.inactive_click_count)}`,
  );
}

// A chart keeps its pixel width; follow the panel when the window changes.
const resize = new ResizeObserver(() => {
  const holder = $('[data-slot="chart"]');
  if (state.chart && holder) state.chart.setSize({ width: Math.max(280, holder.clientWidth), height: 260 });
});

// ---- start ---------------------------------------------------------------

function selectedFromHash() {
  const match = /^#campaign\/(\d{1,16})$/.exec(location.hash);
  return match ? Number(match[1]) : null;
}

function start() {
  $("#tz-name").textContent = TZ;
  $("#list-csv").href = new URL("campaigns?format=csv", API).href;
  $("#show-archived").addEventListener("change", (event) => {
    state.showArchived = event.target.checked;
    $("#list-csv").href = new URL(`campaigns?${new URLSearchParams({ format: "csv", ...listFilter() })}`, API).href;
    loadList({ reset: true });
  });
  setUpCreateForm();
  $("#load-more").addEventListener("click", () => loadList({ reset: false }));
  $("#create-panel").addEventListener("toggle", (event) => {
    if (event.target.open) $("#create-redirect_url").focus();
  });
  window.addEventListener("hashchange", () => {
    showCampaign(selectedFromHash());
    $("#detail").focus({ preventScroll: window.matchMedia("(min-width: 960px)").matches });
  });
  resize.observe($("#detail"));
  loadList({ reset: true });
  showCampaign(selectedFromHash());
}

start();
