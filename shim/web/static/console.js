// The migration console: renders /migration's JSON (the report) as a page, and fetches it again every
// few seconds. Every value is put in the page with textContent (never as markup): group names, statuses
// and error texts come from the upstreams. Read-only: the only request this script makes is a GET of
// /migration on the page's own origin.
"use strict";

(function () {
  const REFRESH_MS = 3000;
  const VERDICTS = { ready: "ready", review: "review", not_ready: "not ready", serving: "serving", retired: "retired" };
  const NOT_READY = new Set(["not_ready", "review"]);
  const VERDICT_ORDER = { not_ready: 0, review: 1, ready: 2, serving: 3, retired: 4 };
  const MODE_ORDER = { legacy: 0, shadow: 1, sdrs: 2 };

  let report = JSON.parse(document.getElementById("report-data").textContent);
  let lastOk = Date.now();
  let failing = null;

  // -- DOM helpers: text only ------------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else if (key === "onclick") node.addEventListener("click", value);
      else node.setAttribute(key, String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function text(value) {
    if (value === null || value === undefined) return "null";
    if (typeof value === "object") return JSON.stringify(value);
    return String(value);
  }

  function when(iso) {
    if (!iso) return "-";
    return String(iso).replace("T", " ").replace("Z", " UTC");
  }

  // -- the URL holds the view: /migration?group=ID, or the list's filters and sort --------------------

  function params() {
    return new URLSearchParams(window.location.search);
  }

  function setParams(update, push) {
    const next = params();
    for (const [key, value] of Object.entries(update)) {
      if (value === "" || value === null || value === false) next.delete(key);
      else next.set(key, value);
    }
    const query = next.toString();
    const url = window.location.pathname + (query ? "?" + query : "");
    if (push) window.history.pushState(null, "", url);
    else window.history.replaceState(null, "", url);
  }

  function groupLink(group, label) {
    const href = "/migration?group=" + encodeURIComponent(group.rcg_id);
    return el("a", {
      href, class: "group-link", onclick: (event) => {
        if (event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
        event.preventDefault();
        window.history.pushState(null, "", href);
        report = null;  // the detail carries the whole timeline: fetch it
        refresh();
      },
    }, label);
  }

  // -- the summary -------------------------------------------------------------------------------------

  function health(label, value, good) {
    return el("div", { class: "card " + (value === good ? "ok" : value === "unknown" ? "unknown" : "bad") },
      el("div", { class: "card-label" }, label), el("div", { class: "card-value", dataset: { health: label } }, value));
  }

  function renderSummary(data) {
    const summary = data.summary || { by_mode: {}, by_verdict: {}, by_project: {}, groups: 0 };
    const shim = data.shim || { upstreams: {} };
    const box = document.getElementById("summary");
    const cards = el("div", { class: "cards" },
      el("div", { class: "card" }, el("div", { class: "card-label" }, "groups"),
        el("div", { class: "card-value", dataset: { count: "groups" } }, summary.groups)),
      ["legacy", "shadow", "sdrs"].map((mode) => el("div", { class: "card mode-" + mode },
        el("div", { class: "card-label" }, "mode " + mode),
        el("div", { class: "card-value", dataset: { count: "mode-" + mode } }, summary.by_mode[mode] || 0))),
      ["ready", "review", "not_ready"].map((verdict) => el("div", { class: "card verdict-" + verdict },
        el("div", { class: "card-label" }, VERDICTS[verdict]),
        el("div", { class: "card-value", dataset: { count: "verdict-" + verdict } }, summary.by_verdict[verdict] || 0))),
      el("div", { class: "card" }, el("div", { class: "card-label" }, "fleet mode version"),
        el("div", { class: "card-value", dataset: { fleet: "version" } },
          data.fleet && data.fleet.mode_version !== undefined
            ? String(data.fleet.mode_version) + (data.fleet.modes_confirmed === false ? " (unconfirmed)" : "")
              + (data.fleet.switching && data.fleet.switching.length ? ", switching " + data.fleet.switching.length : "")
            : "-")),
      health("state store", data.state_store === "available" && shim.state_store !== "unavailable"
        ? "available" : "unavailable", "available"),
      health("SDRS", (shim.upstreams || {}).sdrs || "unknown", "up"),
      health("legacy EVS", (shim.upstreams || {}).legacy || "unknown", "up"));
    const projectModes = {};
    for (const project of data.projects || []) projectModes[project.project_id] = project;
    const rows = Object.entries(summary.by_project).map(([project, modes]) => el("tr", {},
      el("td", { class: "id" }, project),
      el("td", { class: "num" }, modes.legacy || 0), el("td", { class: "num" }, modes.shadow || 0),
      el("td", { class: "num" }, modes.sdrs || 0),
      el("td", {}, projectModes[project] ? "default " + projectModes[project].mode
        + (projectModes[project].fully_migrated ? " (fully migrated)" : "") : "-")));
    const projects = el("table", { class: "projects" },
      el("thead", {}, el("tr", {}, ["project", "legacy", "shadow", "sdrs", "project mode"].map((h) => el("th", {}, h)))),
      el("tbody", {}, rows));
    box.replaceChildren(cards, projects,
      el("p", { class: "muted" }, "Report generated " + when(data.generated_at)
        + (shim.version ? " by shim " + shim.version : "")));
  }

  // -- the list ------------------------------------------------------------------------------------------

  function timeline(entries, limit) {
    const items = (entries || []).slice(0, limit).reverse();  // oldest left, newest right
    return el("span", { class: "timeline", "aria-label": "timeline" }, items.map((item) => el("span", {
      class: "tick " + item.kind + " " + item.result,
      title: when(item.at) + ": " + (item.kind === "dry_run" ? "dry run " : "") + item.result
        + (item.fields && item.fields.length ? " (" + item.fields.join(", ") + ")" : ""),
      dataset: { result: item.result, kind: item.kind },
    })));
  }

  function modeCell(group) {
    const changed = group.mode_changed;
    return el("td", { class: "mode", dataset: { col: "mode" } },
      el("span", { class: "badge mode-" + group.mode }, group.mode),
      group.mode_source === "project" ? el("span", { class: "muted", title: "the project's default" }, " *") : null,
      changed ? el("div", { class: "small muted", dataset: { changed: "by" } },
        "from " + changed.old_mode + " at " + when(changed.at) + " by " + changed.by) : null);
  }

  function evidenceCell(group) {
    const shadow = group.shadow;
    const counts = shadow.comparisons || {};
    const fields = Object.entries(shadow.mismatched_fields || {}).sort()
      .map(([name, count]) => name + " ×" + count).join(", ");
    return el("td", { dataset: { col: "evidence" } },
      el("span", { class: "counts" },
        el("span", { class: "c-match", dataset: { count: "match" } }, counts.match || 0), " / ",
        el("span", { class: "c-mismatch", dataset: { count: "mismatch" } }, counts.mismatch || 0), " / ",
        el("span", { class: "c-error", dataset: { count: "error" } }, counts.error || 0)),
      " ", timeline(shadow.timeline, 20),
      fields ? el("div", { class: "small mismatched", dataset: { col: "fields" } }, fields) : null);
  }

  function mismatchCell(group) {
    const last = group.shadow.last_mismatch;
    if (!last) return el("td", { class: "muted", dataset: { col: "last-mismatch" } }, "-");
    return el("td", { dataset: { col: "last-mismatch" } },
      Object.entries(last.differences || {}).map(([name, values]) => el("div", { class: "diff" },
        el("b", {}, name), ": legacy ", el("code", { class: "legacy-value" }, text(values.legacy)),
        ", sdrs ", el("code", { class: "sdrs-value" }, text(values.sdrs)))),
      el("div", { class: "small muted" }, when(last.at)));
  }

  function actionText(action) {
    if (!action) return "-";
    const verb = (action.action || "action").replace(/^os-/, "").replace(/-replication-consistency-group$/, "");
    const jobs = action.job_ids && action.job_ids.length ? " (job " + action.job_ids.join(", ") + ")" : "";
    return verb + " " + action.outcome + jobs;
  }

  function nextStep(step) {
    if (!step) return el("span", { class: "muted" }, "-");
    if (step.file && step.edit && step.command && step.command.startsWith("shim mode set")) {
      // The fleet's switch; the mapping edit does the same from the file.
      return el("div", { class: "next", title: step.text }, el("div", { class: "small" }, step.summary + ":"),
        el("code", { class: "command" }, step.command),
        el("div", { class: "small muted path" }, "or set ", el("code", { class: "command inline edit" }, step.edit),
          " on entry " + step.entry.replication_consistency_group_id + " in " + step.file));
    }
    if (step.file) {  // a mapping edit, then the reload
      return el("div", { class: "next", title: step.text }, el("div", { class: "small" }, step.summary + ":"),
        step.edit ? el("code", { class: "command edit" }, step.edit) : el("span", { class: "small" }, "remove the entry"),
        el("div", { class: "small muted path" }, "entry " + step.entry.replication_consistency_group_id
          + " in " + step.file),
        el("div", { class: "small" }, "then ", el("code", { class: "command inline" }, step.command)));
    }
    return el("div", { class: "next", title: step.text }, el("div", { class: "small" }, step.summary + ":"),
      step.command ? el("code", { class: "command" }, step.command) : el("div", { class: "small muted" }, step.text));
  }

  function verdictCell(group) {
    const readiness = group.readiness;
    return el("td", { dataset: { col: "verdict", verdict: readiness.verdict } },
      el("span", { class: "badge verdict-" + readiness.verdict }, VERDICTS[readiness.verdict] || readiness.verdict),
      el("div", { class: "reason" }, readiness.reason));
  }

  const SORTS = {
    group: (g) => [g.rcg_id],
    project: (g) => [g.project_id, g.rcg_id],
    mode: (g) => [MODE_ORDER[g.mode] ?? 9, g.rcg_id],
    verdict: (g) => [VERDICT_ORDER[g.readiness.verdict] ?? 9, g.rcg_id],
    mismatches: (g) => [-(g.shadow.comparisons.mismatch || 0), g.rcg_id],
    compared: (g) => [g.shadow.latest_at ? "0" + g.shadow.latest_at : "1", g.rcg_id],
  };

  function compareKeys(a, b) {
    for (let i = 0; i < Math.max(a.length, b.length); i++) {
      if (a[i] < b[i]) return -1;
      if (a[i] > b[i]) return 1;
    }
    return 0;
  }

  function filtered(groups) {
    const p = params();
    const project = p.get("project") || "";
    const mode = p.get("mode") || "";
    const notReady = p.get("not_ready") === "1";
    const search = (p.get("q") || "").toLowerCase();
    const shown = groups.filter((g) => (!project || g.project_id === project) && (!mode || g.mode === mode)
      && (!notReady || NOT_READY.has(g.readiness.verdict))
      && (!search || [g.rcg_id, g.protection_group_id, g.identity && g.identity.name]
        .some((value) => value && String(value).toLowerCase().includes(search))));
    const sort = SORTS[p.get("sort")] ? p.get("sort") : "verdict";
    const direction = p.get("dir") === "desc" ? -1 : 1;
    shown.sort((a, b) => direction * compareKeys(SORTS[sort](a), SORTS[sort](b)));
    return shown;
  }

  function header(label, key) {
    const p = params();
    const current = (SORTS[p.get("sort")] ? p.get("sort") : "verdict") === key;
    const desc = p.get("dir") === "desc";
    if (!key) return el("th", {}, label);
    return el("th", { class: "sortable" + (current ? " sorted" : ""), dataset: { sort: key },
      "aria-sort": current ? (desc ? "descending" : "ascending") : null,
      onclick: () => { setParams({ sort: key, dir: current && !desc ? "desc" : "" }); render(); } },
    label, current ? (desc ? " ▼" : " ▲") : "");
  }

  function renderList(data) {
    const shown = filtered(data.groups);
    document.getElementById("shown-count").textContent = shown.length + " of " + data.groups.length + " groups";
    const rows = shown.map((group) => el("tr", { dataset: { rcg: group.rcg_id, mode: group.mode, verdict: group.readiness.verdict } },
      el("td", { class: "group", dataset: { col: "group" } }, groupLink(group, group.rcg_id),
        group.identity && group.identity.name !== null
          ? el("div", { class: "name", dataset: { col: "name" } }, group.identity.name) : null,
        el("div", { class: "small muted id", title: "protection group " + group.protection_group_id },
          "pg " + group.protection_group_id.slice(0, 8) + "…")),
      el("td", { class: "id small project", dataset: { col: "project" } }, group.project_id),
      modeCell(group), evidenceCell(group), mismatchCell(group),
      el("td", { class: "small action", dataset: { col: "action" } }, actionText(group.last_action)),
      verdictCell(group),
      el("td", { class: "next-cell", dataset: { col: "next" } }, nextStep(group.readiness.next_step))));
    const table = el("table", { class: "groups", id: "groups" },
      el("thead", {}, el("tr", {}, header("Group", "group"), header("Project", "project"), header("Mode", "mode"),
        header("Comparisons: match / mismatch / error", "mismatches"), header("Last mismatch", null),
        header("Last action (SDRS job)", null), header("Readiness", "verdict"), header("Next step", null))),
      el("tbody", {}, rows));
    const empty = shown.length ? null : el("p", { class: "notice" },
      data.groups.length ? "No group matches these filters." : "No mapped groups.");
    document.getElementById("view").replaceChildren(table, empty || "");
  }

  // -- one group ----------------------------------------------------------------------------------------

  function field(label, ...value) {
    return [el("dt", {}, label), el("dd", {}, ...value)];
  }

  function renderDetail(data, id) {
    const group = data.groups[0];
    const view = document.getElementById("view");
    const back = el("a", { href: "/migration", class: "back", onclick: (event) => {
      event.preventDefault(); window.history.pushState(null, "", "/migration"); report = null; refresh();
    } }, "← all groups");
    if (!group) {
      view.replaceChildren(back, el("p", { class: "notice" }, "No mapped group " + id + "."));
      return;
    }
    const shadow = group.shadow;
    const action = group.last_action;
    const dry = shadow.last_dry_run;
    const dl = el("dl", { class: "facts" },
      field("Project", group.project_id), field("Protection group", group.protection_group_id),
      field("Mode", group.mode + (group.mode_source === "project" ? " (the project's default)" : "")
        + (group.mode_changed ? "; changed from " + group.mode_changed.old_mode + " at "
          + when(group.mode_changed.at) + " by " + group.mode_changed.by : "")),
      field("Legacy name", group.identity ? text(group.identity.name) : "(not recorded)"),
      field("Readiness", el("span", { class: "badge verdict-" + group.readiness.verdict },
        VERDICTS[group.readiness.verdict] || group.readiness.verdict), " ", group.readiness.reason),
      field("Next step", nextStep(group.readiness.next_step)),
      field("Comparisons", (shadow.comparisons.match || 0) + " match, " + (shadow.comparisons.mismatch || 0)
        + " mismatch, " + (shadow.comparisons.error || 0) + " error; first " + when(shadow.first_at)
        + ", latest " + when(shadow.latest_at)),
      field("Mismatches by field", Object.entries(shadow.mismatched_fields || {}).map(([n, c]) => n + " ×" + c).join(", ") || "none"),
      field("Differing now", Object.entries(shadow.differing_since || {}).map(([n, at]) => n + " since " + when(at)).join(", ") || "none"),
      field("Dry runs", (shadow.dry_runs.agree || 0) + " agree, " + (shadow.dry_runs.disagree || 0) + " disagree, "
        + (shadow.dry_runs.error || 0) + " error"),
      field("Last dry run", dry ? [(dry.action || "(no action)") + ": legacy answered " + dry.legacy_status
        + ", sdrs mode would answer " + dry.would_answer + " (" + dry.outcome + ", precondition " + dry.precondition
        + ") at " + when(dry.at), (dry.planned_calls || []).map((call) => el("div", {},
        el("code", {}, call.method + " " + call.path + " " + text(call.body)))),
        dry.message ? el("div", { class: "small" }, dry.message) : null] : "-"),
      field("Last action", actionText(action) + (action && action.recorded_at ? ", recorded " + when(action.recorded_at) : "")),
      field("Deleted", group.deleted ? "at " + when(group.deleted.at) + " (SDRS job " + group.deleted.job_id + ")" : "no"));
    const mismatch = shadow.last_mismatch;
    const diffs = mismatch ? el("table", { class: "diffs" },
      el("thead", {}, el("tr", {}, el("th", {}, "field"), el("th", {}, "legacy"), el("th", {}, "sdrs"))),
      el("tbody", {}, Object.entries(mismatch.differences || {}).map(([name, values]) => el("tr", {},
        el("td", {}, name), el("td", {}, el("code", {}, text(values.legacy))),
        el("td", {}, el("code", {}, text(values.sdrs))))))) : el("p", { class: "muted" }, "No mismatch recorded.");
    const history = el("table", { class: "history", id: "history" },
      el("thead", {}, el("tr", {}, ["when", "kind", "result", "after", "details"].map((h) => el("th", {}, h)))),
      el("tbody", {}, (shadow.timeline || []).map((item) => el("tr", { class: item.result, dataset: { result: item.result } },
        el("td", {}, when(item.at)), el("td", {}, item.kind === "dry_run" ? "dry run" : "comparison"),
        el("td", {}, el("span", { class: "badge result-" + item.result }, item.result)),
        el("td", {}, item.kind === "dry_run" ? text(item.action) : text(item.trigger)),
        el("td", { class: "small" }, item.kind === "dry_run"
          ? "legacy " + item.legacy_status + ", sdrs mode " + item.would_answer
          : (item.fields && item.fields.length ? "differs: " + item.fields.join(", ") : "") + (item.error ? item.error : ""))))));
    view.replaceChildren(back, el("h2", { id: "detail-title" }, "Group ", el("span", { class: "id" }, group.rcg_id)),
      dl, el("h3", {}, "Last mismatch" + (mismatch ? " (" + when(mismatch.at) + ", after " + mismatch.trigger + ")" : "")),
      diffs, el("h3", {}, "History (newest first; the last " + (shadow.timeline_kept || 0) + " kept)"), history);
    document.getElementById("shown-count").textContent = "";
  }

  // -- render, refresh -------------------------------------------------------------------------------------

  function syncControls(data) {
    const p = params();
    const select = document.getElementById("filter-project");
    const projects = Object.keys((data.summary || {}).by_project || {});
    const wanted = ["", ...projects];
    if (Array.from(select.options).map((o) => o.value).join("\n") !== wanted.join("\n")) {
      select.replaceChildren(...wanted.map((value) => el("option", { value }, value || "all")));
    }
    select.value = p.get("project") || "";
    document.getElementById("filter-mode").value = p.get("mode") || "";
    document.getElementById("filter-not-ready").checked = p.get("not_ready") === "1";
    const search = document.getElementById("filter-text");
    if (document.activeElement !== search) search.value = p.get("q") || "";
    document.getElementById("controls").hidden = Boolean(p.get("group"));
  }

  function render() {
    if (!report) return;
    const id = params().get("group");
    document.getElementById("summary").hidden = Boolean(id);  // a group's report has only that group
    renderSummary(report);
    syncControls(report);
    if (id) renderDetail(report, id);
    else renderList(report);
    const stateText = failing ? "refresh failed (" + failing + "); showing data from "
      + new Date(lastOk).toLocaleTimeString() : "updated " + new Date(lastOk).toLocaleTimeString();
    const state = document.getElementById("refresh-state");
    state.textContent = stateText;
    state.className = "refresh" + (failing ? " bad" : "");
    document.body.dataset.generatedAt = report.generated_at || "";
  }

  let inFlight = false;
  async function refresh() {
    if (inFlight) return;
    inFlight = true;
    const id = params().get("group");
    try {
      const answer = await fetch("/migration" + (id ? "?group=" + encodeURIComponent(id) : ""),
        { headers: { Accept: "application/json" }, cache: "no-store", credentials: "same-origin" });
      if (!answer.ok) throw new Error("HTTP " + answer.status);
      const data = await answer.json();
      if ((params().get("group") || null) === (id || null)) {
        report = data;
        failing = null;
        lastOk = Date.now();
      }
    } catch (err) {
      failing = String(err && err.message ? err.message : err).slice(0, 100);
    } finally {
      inFlight = false;
    }
    render();
  }

  function bind() {
    document.getElementById("filter-project").addEventListener("change", (e) => { setParams({ project: e.target.value }); render(); });
    document.getElementById("filter-mode").addEventListener("change", (e) => { setParams({ mode: e.target.value }); render(); });
    document.getElementById("filter-not-ready").addEventListener("change", (e) => { setParams({ not_ready: e.target.checked ? "1" : "" }); render(); });
    document.getElementById("filter-text").addEventListener("input", (e) => { setParams({ q: e.target.value }); render(); });
    document.getElementById("home").addEventListener("click", (event) => {
      event.preventDefault(); window.history.pushState(null, "", "/migration"); report = null; refresh();
    });
    window.addEventListener("popstate", () => { report = null; refresh(); });
    window.setInterval(() => { if (document.visibilityState !== "hidden") refresh(); }, REFRESH_MS);
  }

  bind();
  render();
})();
