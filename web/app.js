/*
 * tapwire dashboard: the flow list, its filters, the detail panel (with what
 * rewrite rules changed) and the rules view.
 *
 * Everything here talks to the JSON API of src/dashboard.c (the contract is
 * the API description the two sides were written against). Rules this file
 * keeps, because the page shows bytes that strangers control:
 *  - captured data reaches the DOM only through textContent, attribute
 *    values, or blob: URLs of <img> elements: nothing here parses HTML from
 *    a string (the browser test greps this file for the HTML sinks);
 *  - nothing inline (the CSP forbids inline scripts and styles): widths of
 *    timing bars are SVG attributes, looks are classes in style.css;
 *  - the browser never holds the whole store: pages of PAGE_FLOWS rows, at
 *    most MAX_ROWS rendered, older ones fetched again with the `next` cursor.
 */
(function () {
    'use strict';

    const PAGE_FLOWS = 100;            /* rows per /api/flows query */
    const MAX_ROWS = 2000;             /* rows kept in the DOM */
    const HEX_LIMIT_BYTES = 64 * 1024; /* hex dumps show this much */
    const TEXT_LIMIT_CHARS = 2 * 1024 * 1024; /* longer text is cut for display */
    const PRETTY_LIMIT_CHARS = 4 * 1024 * 1024; /* larger JSON is shown as it came */
    const HAR_IDS_PER_QUERY = 500;     /* keeps /api/har?ids= well inside URL limits */
    const FILTER_DEBOUNCE_MS = 400;
    const LIVE_BATCH_MS = 50;          /* live rows are inserted in batches this often */
    const CATCHUP_DELAY_MS = 1500;     /* throttle for re-queries when the client cannot match */
    const EVENTS_RETRY_MIN_MS = 2000;
    const EVENTS_RETRY_MAX_MS = 60000;
    const TOAST_MS = 2500;
    const FILTER_KEYS = ['host', 'method', 'status', 'type', 'q', 'body', 'bodycase', 'filter'];
    const TABS = ['request', 'response', 'messages', 'timing', 'tls', 'changes'];
    /* A live WebSocket conversation is asked for anew this often. */
    const WS_POLL_MS = 1000;
    const DIFF_MAX_LINES = 2000;       /* longer header lists are shown side by side, not diffed */
    const SVG_NS = 'http://www.w3.org/2000/svg';

    const $ = (id) => document.getElementById(id);

    const state = {
        filters: {},
        rows: new Map(),      /* id -> <tr>, rendered rows only */
        flows: new Map(),     /* id -> summary of a rendered row */
        next: null,           /* cursor for older rows, or null at the end */
        newerHidden: false,   /* the top of the list was dropped to respect MAX_ROWS */
        newerCount: 0,
        listGen: 0,           /* bumps on every first-page query; stale answers are dropped */
        listAbort: null,
        loading: false,
        loadingOlder: false,
        pending: [],          /* live flows that arrived while the first page loaded */
        live: [],             /* live flows waiting for the next batch */
        liveTimer: 0,
        catchupTimer: 0,
        cursor: null,         /* id of the keyboard-selected row */
        openId: null,         /* id shown in the detail panel */
        openDetail: null,
        detailGen: 0,
        detailUrls: [],       /* blob: URLs of the open detail, revoked on change */
        selected: new Set(),
        events: null,
        eventsRetryMs: EVENTS_RETRY_MIN_MS,
        eventsHadError: false,
        authFailed: false,
        stats: null,          /* last figures shown in the top bar */
        view: 'flows',        /* 'flows' or 'rules' */
        tab: 'response',      /* the detail tab shown */
    };

    /* The rules view: what GET /api/rules said last. */
    const rulesState = {
        rules: [],            /* {id, position, enabled, spec, created_at}, in order */
        statics: [],          /* lines of --rules and --rule */
        available: true,
        editing: null,        /* id of the rule whose spec is being edited */
        gen: 0,               /* bumps on every load; stale answers are dropped */
        busy: false,          /* a change is on its way: the buttons wait */
    };

    /* ---- small helpers ---- */

    function el(tag, attrs, ...children) {
        const e = document.createElement(tag);
        setAttrs(e, attrs);
        appendAll(e, children);
        return e;
    }

    function svg(tag, attrs, ...children) {
        const e = document.createElementNS(SVG_NS, tag);
        setAttrs(e, attrs);
        appendAll(e, children);
        return e;
    }

    function setAttrs(e, attrs) {
        if (!attrs)
            return;
        for (const [k, v] of Object.entries(attrs)) {
            if (v === null || v === undefined || v === false)
                continue;
            if (k === 'text')
                e.textContent = String(v);
            else if (k.startsWith('on') && typeof v === 'function')
                e.addEventListener(k.slice(2), v);
            else
                e.setAttribute(k, v === true ? '' : String(v));
        }
    }

    function appendAll(parent, children) {
        for (const c of children) {
            if (c === null || c === undefined || c === false)
                continue;
            if (Array.isArray(c))
                appendAll(parent, c);
            else if (typeof c === 'string' || typeof c === 'number')
                parent.appendChild(document.createTextNode(String(c)));
            else
                parent.appendChild(c);
        }
    }

    function clear(node) {
        while (node.firstChild)
            node.removeChild(node.firstChild);
    }

    /* The token for the X-Tapwire-Token header. The cookie is HttpOnly (pages
     * on other ports of this host share it), so the dashboard writes the
     * token into the page it serves to a request that carries the cookie. */
    function token() {
        const meta = document.querySelector('meta[name="tapwire-token"]');
        return meta ? meta.getAttribute('content') || '' : '';
    }

    function humanSize(n) {
        if (n === null || n === undefined || !Number.isFinite(Number(n)))
            return '';
        n = Number(n);
        if (n < 1024)
            return n + ' B';
        const units = ['KiB', 'MiB', 'GiB', 'TiB'];
        let u = -1;
        do {
            n /= 1024;
            u++;
        } while (n >= 1024 && u < units.length - 1);
        return (n < 10 ? n.toFixed(1) : Math.round(n)) + ' ' + units[u];
    }

    function humanDuration(ms) {
        if (ms === null || ms === undefined || !Number.isFinite(Number(ms)))
            return '';
        ms = Number(ms);
        if (ms < 1)
            return ms.toFixed(2) + ' ms';
        if (ms < 1000)
            return Math.round(ms) + ' ms';
        if (ms < 60000)
            return (ms / 1000).toFixed(2) + ' s';
        return Math.floor(ms / 60000) + ' min ' + Math.round((ms % 60000) / 1000) + ' s';
    }

    function pad(n, w) {
        return String(n).padStart(w, '0');
    }

    function clockTime(unixMs) {
        if (!Number.isFinite(Number(unixMs)))
            return '';
        const d = new Date(Number(unixMs));
        return pad(d.getHours(), 2) + ':' + pad(d.getMinutes(), 2) + ':' + pad(d.getSeconds(), 2) +
            '.' + pad(d.getMilliseconds(), 3);
    }

    function isoTime(unixMs) {
        const d = new Date(Number(unixMs));
        return Number.isNaN(d.getTime()) ? '' : d.toISOString();
    }

    function mimeType(ct) {
        return (ct || '').split(';')[0].trim().toLowerCase();
    }

    function charsetOf(ct) {
        const m = /;\s*charset\s*=\s*"?([^";\s]+)/i.exec(ct || '');
        return m ? m[1].toLowerCase() : '';
    }

    function hostPort(host, port, scheme) {
        const h = host && host.includes(':') && !host.startsWith('[') ? '[' + host + ']' : (host || '');
        const dflt = scheme === 'https' ? 443 : scheme === 'http' ? 80 : -1;
        return port && Number(port) !== dflt ? h + ':' + port : h;
    }

    function flowUrl(f) {
        if (f.kind === 'tunnel')
            return hostPort(f.host, f.port, '');
        return (f.scheme || 'http') + '://' + hostPort(f.host, f.port, f.scheme) + (f.path || '');
    }

    function statusClass(f) {
        if (f.error)
            return 'st-err';
        const s = Number(f.status) || 0;
        if (s >= 500)
            return 'st-5xx';
        if (s >= 400)
            return 'st-4xx';
        if (s >= 300)
            return 'st-3xx';
        if (s >= 200)
            return 'st-2xx';
        if (s >= 100)
            return 'st-1xx';
        return 'st-none';
    }

    let toastTimer = 0;
    function toast(msg) {
        const t = $('toast');
        t.textContent = msg;
        t.hidden = false;
        clearTimeout(toastTimer);
        toastTimer = setTimeout(() => { t.hidden = true; }, TOAST_MS);
    }

    function notice(msg) {
        const n = $('notice');
        n.textContent = msg || '';
        n.hidden = !msg;
    }

    /* ---- the API ---- */

    class HttpError extends Error {
        constructor(status, message) {
            super(message);
            this.status = status;
        }
    }

    function showAuthError(failed) {
        state.authFailed = failed;
        $('auth-error').hidden = !failed;
        document.body.classList.toggle('unauthorised', failed);
    }

    /* fetch() with the token header; throws HttpError for anything but 2xx. */
    async function api(path, opts) {
        const o = Object.assign({ credentials: 'same-origin', cache: 'no-store' }, opts || {});
        const headers = new Headers(o.headers || {});
        const t = token();
        if (t)
            headers.set('X-Tapwire-Token', t);
        o.headers = headers;
        const res = await fetch(path, o);
        if (res.status === 401) {
            showAuthError(true);
            throw new HttpError(401, 'not authorised');
        }
        if (!res.ok) {
            let msg = res.status + ' ' + res.statusText;
            try {
                const j = await res.json();
                if (j && typeof j.error === 'string')
                    msg = j.error;
            } catch (e) {
                /* not JSON: keep the status line */
            }
            throw new HttpError(res.status, msg);
        }
        if (state.authFailed)
            showAuthError(false);
        return res;
    }

    async function apiJSON(path, opts) {
        const res = await api(path, opts);
        return res.json();
    }

    /* The filters as query parameters, as /api/flows and /api/har take them. */
    function filterParams() {
        const p = new URLSearchParams();
        for (const k of FILTER_KEYS) {
            if (state.filters[k] && k !== 'bodycase')
                p.set(k, state.filters[k]);
        }
        /* A body search ignores case unless asked to match it. */
        if (state.filters.body && state.filters.bodycase !== 'exact')
            p.set('icase', '1');
        return p;
    }

    function flowsQuery(extra) {
        const p = filterParams();
        for (const [k, v] of Object.entries(extra || {}))
            p.set(k, String(v));
        return '/api/flows?' + p.toString();
    }

    function filenameFrom(res, fallback) {
        const cd = res.headers.get('Content-Disposition') || '';
        const m = /filename\*?=(?:UTF-8'')?"?([^";]+)"?/i.exec(cd);
        let name = fallback;
        if (m) {
            try {
                name = decodeURIComponent(m[1]);
            } catch (e) {
                name = m[1];
            }
        }
        return name.replace(/[\\/\u0000-\u001f]/g, '_') || fallback;
    }

    function saveBlob(blob, name) {
        const url = URL.createObjectURL(blob);
        const a = el('a', { href: url, download: name, class: 'sr-only' });
        document.body.appendChild(a);
        a.click();
        a.remove();
        setTimeout(() => URL.revokeObjectURL(url), 60000);
    }

    /* Downloads through fetch (the API wants the token header, which a plain
     * link cannot send) and hands the bytes to the browser as a blob. */
    async function download(path, fallbackName) {
        try {
            const res = await api(path);
            saveBlob(await res.blob(), filenameFrom(res, fallbackName));
        } catch (e) {
            if (e.status !== 401)
                toast('Download failed: ' + e.message);
        }
    }

    /* ---- filters and the URL hash ---- */

    function globToRegExp(glob) {
        let re = '';
        for (const ch of glob) {
            if (ch === '*')
                re += '.*';
            else if (ch === '?')
                re += '.';
            else
                re += ch.replace(/[.+^${}()|[\]\\]/g, '\\$&');
        }
        return new RegExp('^' + re + '$', 'i');
    }

    /* Whether a live flow belongs in the list under the current filters:
     * true, false, or null when only the server can tell (body search). The
     * matching mirrors the server's: host glob, method and content type case-
     * insensitive, q a case-insensitive substring of host + path. */
    /* The host filter as the server reads it: "!" first hides what matches;
     * a pattern with * or ? is a glob, anything else a substring. */
    function hostMatches(filter, host) {
        let text = filter.trim();
        const negated = text.startsWith('!');
        if (negated)
            text = text.slice(1).trim();
        if (!text)
            return true;
        const hit = /[*?[]/.test(text) ? globToRegExp(text).test(host)
            : host.toLowerCase().includes(text.toLowerCase());
        return negated ? !hit : hit;
    }

    function matchesFilters(f, flt) {
        if (flt.host && !hostMatches(flt.host, f.host || ''))
            return false;
        if (flt.method && String(f.method || '').toUpperCase() !== flt.method.toUpperCase())
            return false;
        if (flt.status) {
            if (flt.status === 'err') {
                if (!f.error)
                    return false;
            } else if (Math.floor((Number(f.status) || 0) / 100) !== Number(flt.status[0])) {
                return false;
            }
        }
        if (flt.type && !String(f.content_type || '').toLowerCase().includes(flt.type.toLowerCase()))
            return false;
        if (flt.q && !(String(f.host || '') + String(f.path || '')).toLowerCase()
            .includes(flt.q.toLowerCase()))
            return false;
        /* Only the server can tell for a body search or an expression. */
        if (flt.body || flt.filter)
            return null;
        return true;
    }

    function readHash() {
        const p = new URLSearchParams(location.hash.replace(/^#/, ''));
        const filters = {};
        for (const k of FILTER_KEYS) {
            const v = (p.get(k) || '').trim();
            if (v)
                filters[k] = v;
        }
        const flow = p.get('flow');
        return {
            filters,
            flow: flow && /^\d+$/.test(flow) ? Number(flow) : null,
            view: ['rules', 'sql'].includes(p.get('view')) ? p.get('view') : 'flows',
        };
    }

    /* replaceState: filters and the open flow survive a reload without
     * filling the history with every keystroke. */
    function writeHash() {
        const p = new URLSearchParams();
        for (const k of FILTER_KEYS) {
            if (state.filters[k])
                p.set(k, state.filters[k]);
        }
        if (state.openId !== null)
            p.set('flow', String(state.openId));
        if (state.view !== 'flows')
            p.set('view', state.view);
        const h = p.toString();
        history.replaceState(null, '', location.pathname + location.search + (h ? '#' + h : ''));
    }

    function filtersFromForm() {
        const form = $('filters');
        const filters = {};
        for (const k of FILTER_KEYS) {
            let v = (form.elements[k].value || '').trim();
            if (k === 'method')
                v = v.toUpperCase();
            if (v)
                filters[k] = v;
        }
        return filters;
    }

    function fillForm(filters) {
        const form = $('filters');
        for (const k of FILTER_KEYS)
            form.elements[k].value = filters[k] || '';
        markActiveFilters();
    }

    function markActiveFilters() {
        const form = $('filters');
        for (const k of FILTER_KEYS)
            form.elements[k].classList.toggle('active', !!state.filters[k]);
        form.classList.toggle('filtering', Object.keys(state.filters).length > 0);
    }

    function sameFilters(a, b) {
        return FILTER_KEYS.every((k) => (a[k] || '') === (b[k] || ''));
    }

    function applyFilters(force) {
        const f = filtersFromForm();
        if (!force && sameFilters(f, state.filters))
            return;
        state.filters = f;
        markActiveFilters();
        writeHash();
        reload();
    }

    /* ---- the flow list ---- */

    function icon(name, label) {
        const paths = {
            lock: 'M4 7V5a4 4 0 0 1 8 0v2h1v8H3V7h1zm2 0h4V5a2 2 0 0 0-4 0v2z',
            error: 'M8 1a7 7 0 1 1 0 14A7 7 0 0 1 8 1zm-1 3v5h2V4H7zm0 6v2h2v-2H7z',
            modified: 'M11 1l4 4-9 9H2v-4l9-9zm0 3L4 11v1h1l7-7-1-1z',
        };
        return svg('svg', {
            class: 'icon icon-' + name, viewBox: '0 0 16 16', width: '12', height: '12',
            role: 'img', 'aria-label': label,
        }, svg('title', { text: label }), svg('path', { d: paths[name] }));
    }

    function cell(cls, text, title) {
        return el('td', { class: cls, text: text, title: title || null });
    }

    /* Badges of the listeners a flow can come through (flows.listener). */
    const LISTENER_BADGES = { socks5: 'S5', transparent: 'TP', reverse: 'REV', replay: 'RE' };

    function renderRow(f) {
        const id = Number(f.id);
        const marks = el('td', { class: 'c-marks' });
        if (f.tls)
            marks.appendChild(icon('lock', 'TLS'));
        if (f.error)
            marks.appendChild(icon('error', 'error: ' + f.error));
        if (f.modified)
            marks.appendChild(icon('modified', 'modified by a rule'));
        if (f.imported)
            marks.appendChild(el('span', { class: 'badge', text: 'HAR', title: 'imported from a HAR file' }));
        /* The explicit proxy is the usual way in: only the others are marked. */
        const via = LISTENER_BADGES[f.listener];
        if (via)
            marks.appendChild(el('span', { class: 'badge', text: via, title: 'came in through ' + f.listener }));
        if (f.bodies_dropped)
            marks.appendChild(el('span', { class: 'badge', text: '\u2205B', title: 'bodies dropped: the database could not keep up, or the disk was full' }));
        if (f.kind === 'websocket')
            marks.appendChild(el('span', { class: 'badge', text: 'WS', title: 'WebSocket' }));
        else if (f.kind === 'tunnel')
            marks.appendChild(el('span', { class: 'badge', text: 'TUN', title: 'tunnel, not intercepted' }));

        const box = el('input', {
            type: 'checkbox', tabindex: '-1', 'aria-label': 'Select flow ' + id,
        });
        box.checked = state.selected.has(id);

        let status = f.status ? String(f.status) : (f.error ? 'error' : '');
        const ct = f.content_type || '';
        const path = f.kind === 'tunnel' ? '' : (f.path || '');
        const tr = el('tr', {
            'data-id': id, tabindex: '-1',
            class: [f.error ? 'is-error' : '', f.kind === 'tunnel' ? 'is-tunnel' : ''].join(' ').trim() || null,
        },
            el('td', { class: 'c-sel' }, box),
            marks,
            cell('c-time', clockTime(f.time), isoTime(f.time)),
            cell('c-method', f.method || ''),
            cell('c-host', f.host || '', hostPort(f.host, f.port, f.scheme)),
            cell('c-path', path, path),
            el('td', { class: 'c-status ' + statusClass(f), text: status, title: f.error || null }),
            cell('c-type', mimeType(ct), ct),
            cell('c-size', humanSize(f.size), f.size !== undefined && f.size !== null ? f.size + ' bytes' : null),
            cell('c-dur', humanDuration(f.duration_ms)));
        if (state.selected.has(id))
            tr.classList.add('selected');
        if (id === state.openId)
            tr.classList.add('open');
        if (id === state.cursor)
            tr.classList.add('cursor');
        return tr;
    }

    function rowIds() {
        return Array.from($('flow-rows').children, (tr) => Number(tr.dataset.id));
    }

    function forgetRow(tr) {
        const id = Number(tr.dataset.id);
        state.rows.delete(id);
        state.flows.delete(id);
        state.selected.delete(id);
        if (state.cursor === id)
            state.cursor = null;
        tr.remove();
    }

    /* Inserts a flow in id order (newest first), keeping the view still
     * when the user has scrolled away from the top. */
    function insertRow(f) {
        const tbody = $('flow-rows');
        const scroller = $('list-scroll');
        const id = Number(f.id);
        const tr = renderRow(f);
        const before = scroller.scrollHeight;
        let at = tbody.firstElementChild;
        while (at && Number(at.dataset.id) > id)
            at = at.nextElementSibling;
        tbody.insertBefore(tr, at);
        state.rows.set(id, tr);
        state.flows.set(id, f);
        if (scroller.scrollTop > 0)
            scroller.scrollTop += scroller.scrollHeight - before;
    }

    /* Drops the oldest rendered rows beyond MAX_ROWS; they can be fetched
     * again with the cursor. */
    function trimOldest() {
        const tbody = $('flow-rows');
        let dropped = false;
        while (state.rows.size > MAX_ROWS && tbody.lastElementChild) {
            forgetRow(tbody.lastElementChild);
            dropped = true;
        }
        if (dropped && tbody.lastElementChild)
            state.next = Number(tbody.lastElementChild.dataset.id);
    }

    /* Drops the newest rendered rows beyond MAX_ROWS (after loading older
     * ones); the list then stops taking live rows until "show the newest". */
    function trimNewest() {
        const tbody = $('flow-rows');
        const scroller = $('list-scroll');
        const before = scroller.scrollHeight;
        let dropped = false;
        while (state.rows.size > MAX_ROWS && tbody.firstElementChild) {
            forgetRow(tbody.firstElementChild);
            dropped = true;
        }
        if (dropped) {
            scroller.scrollTop -= before - scroller.scrollHeight;
            state.newerHidden = true;
        }
    }

    function clearRows() {
        clear($('flow-rows'));
        state.live = [];
        state.rows.clear();
        state.flows.clear();
        state.selected.clear();
        state.cursor = null;
        state.next = null;
        state.newerHidden = false;
        state.newerCount = 0;
    }

    /* Says how the filters that are set are read, so an empty list
     * explains itself. */
    function filterHint() {
        const f = state.filters;
        const parts = [];
        if (f.host) {
            let text = f.host.trim();
            const negated = text.startsWith('!');
            if (negated)
                text = text.slice(1).trim();
            const how = /[*?[]/.test(text) ? 'hosts matching the pattern ' + text
                : 'hosts containing “' + text + '”';
            parts.push((negated ? 'hiding ' : 'only ') + how);
        }
        if (f.body)
            parts.push('bodies containing “' + f.body + '”' +
                (f.bodycase === 'exact' ? ' (case must match)' : ' (any case)'));
        return parts.length ? ': ' + parts.join('; ') + ' (Reset clears them)' : '';
    }

    function updateListChrome() {
        const n = state.rows.size;
        const filtering = Object.keys(state.filters).length > 0;
        const empty = $('list-empty');
        empty.hidden = n > 0 || state.loading;
        empty.textContent = filtering ? 'No flows match these filters' + filterHint() + '.'
            : 'No flows yet. Point a client at the proxy and they show up here.';
        $('load-older').hidden = state.next === null || state.next === undefined;
        $('load-older').disabled = state.loadingOlder;
        const jump = $('jump-newest');
        jump.hidden = !state.newerHidden;
        jump.textContent = 'Newer flows are not shown' +
            (state.newerCount > 0 ? ' (' + state.newerCount + ' arrived since)' : '') + ' \u2191 show the newest';
        let status = n + (n === 1 ? ' flow shown' : ' flows shown');
        if (state.loading || state.loadingOlder)
            status += ', loading\u2026';
        else if (state.next === null && n > 0)
            status += ', no older flows';
        $('list-status').textContent = status;
        updateSelectionChrome();
    }

    function updateSelectionChrome() {
        const n = state.selected.size;
        const btn = $('export-selected');
        btn.disabled = n === 0;
        btn.textContent = n ? 'Export ' + n + ' selected (HAR)' : 'Export selected (HAR)';
        const all = $('select-all');
        all.checked = n > 0 && n === state.rows.size;
        all.indeterminate = n > 0 && n < state.rows.size;
    }

    function updateStats(s) {
        if (!s)
            return;
        /* The figures made up between heartbeats carry no write state:
         * the last one stands until the next heartbeat. */
        const prev = state.stats || {};
        state.stats = {
            stored: Number(s.stored || 0),
            dropped: Number(s.dropped || 0),
            bodiesDropped: s.bodies_dropped !== undefined ? Number(s.bodies_dropped) : (prev.bodiesDropped || 0),
            writeError: s.write_failing !== undefined ? (s.write_failing ? (s.write_error || 'failing') : '') : (prev.writeError || ''),
        };
        const box = $('stats');
        clear(box);
        box.appendChild(el('span', { text: 'stored ' + state.stats.stored.toLocaleString() }));
        const dropped = state.stats.dropped;
        box.appendChild(el('span', {
            class: dropped > 0 ? 'dropped warn' : 'dropped',
            text: 'dropped ' + dropped.toLocaleString(),
        }));
        if (state.stats.bodiesDropped > 0)
            box.appendChild(el('span', {
                class: 'dropped warn',
                text: 'bodies dropped ' + state.stats.bodiesDropped.toLocaleString(),
                title: 'flows kept without their bodies: the database could not keep up, or the disk was full',
            }));
        if (state.stats.writeError)
            box.appendChild(el('span', {
                class: 'dropped warn',
                text: 'not recording',
                title: 'flows are being lost: ' + state.stats.writeError,
            }));
    }

    /* The first page for the current filters, replacing the list. */
    async function reload() {
        const gen = ++state.listGen;
        if (state.listAbort)
            state.listAbort.abort();
        const ctrl = new AbortController();
        state.listAbort = ctrl;
        state.loading = true;
        state.pending = [];
        state.live = [];
        clearTimeout(state.liveTimer);
        state.liveTimer = 0;
        clearTimeout(state.catchupTimer);
        state.catchupTimer = 0;
        updateListChrome();
        try {
            const data = await apiJSON(flowsQuery({ limit: PAGE_FLOWS }), { signal: ctrl.signal });
            if (gen !== state.listGen)
                return;
            clearRows();
            const frag = document.createDocumentFragment();
            for (const f of data.flows || []) {
                const id = Number(f.id);
                if (state.rows.has(id))
                    continue;
                const tr = renderRow(f);
                state.rows.set(id, tr);
                state.flows.set(id, f);
                frag.appendChild(tr);
            }
            $('flow-rows').appendChild(frag);
            state.next = data.next === undefined ? null : data.next;
            updateStats(data.stats);
            notice('');
        } catch (e) {
            if (gen !== state.listGen || e.name === 'AbortError')
                return;
            if (e.status !== 401)
                notice('Could not load flows: ' + e.message);
        } finally {
            if (gen === state.listGen) {
                state.loading = false;
                state.listAbort = null;
                const pending = state.pending;
                state.pending = [];
                pending.sort((a, b) => Number(a.id) - Number(b.id));
                for (const f of pending)
                    applyFlow(f);
                trimOldest();
                updateListChrome();
            }
        }
    }

    async function loadOlder() {
        if (state.next === null || state.next === undefined || state.loadingOlder || state.loading)
            return;
        const gen = state.listGen;
        state.loadingOlder = true;
        updateListChrome();
        try {
            const data = await apiJSON(flowsQuery({ limit: PAGE_FLOWS, before: state.next }));
            if (gen !== state.listGen)
                return;
            const frag = document.createDocumentFragment();
            for (const f of data.flows || []) {
                const id = Number(f.id);
                if (state.rows.has(id))
                    continue;
                const tr = renderRow(f);
                state.rows.set(id, tr);
                state.flows.set(id, f);
                frag.appendChild(tr);
            }
            $('flow-rows').appendChild(frag);
            state.next = data.next === undefined ? null : data.next;
            trimNewest();
        } catch (e) {
            if (e.status !== 401)
                notice('Could not load older flows: ' + e.message);
        } finally {
            state.loadingOlder = false;
            updateListChrome();
        }
        if (gen === state.listGen)
            maybeLoadMore();
    }

    /* Infinite scroll: keep loading while the "load older" button is in view. */
    function maybeLoadMore() {
        const btn = $('load-older');
        if (btn.hidden)
            return;
        const view = $('list-scroll').getBoundingClientRect();
        const r = btn.getBoundingClientRect();
        if (r.top < view.bottom && r.bottom > view.top)
            loadOlder();
    }

    /* A live flow from /api/events. Flows are applied in batches, so a
     * burst of traffic costs one layout per LIVE_BATCH_MS, not one per flow;
     * a burst larger than the list itself is cheaper as a fresh first page. */
    function onFlow(f) {
        if (!f || f.id === undefined)
            return;
        if (state.loading) {
            state.pending.push(f);
            return;
        }
        state.live.push(f);
        if (state.live.length > MAX_ROWS) {
            reload();
            return;
        }
        if (!state.liveTimer)
            state.liveTimer = setTimeout(flushLive, LIVE_BATCH_MS);
    }

    function flushLive() {
        state.liveTimer = 0;
        const batch = state.live;
        state.live = [];
        if (batch.length === 0 || state.loading)
            return;
        batch.sort((a, b) => Number(a.id) - Number(b.id));
        for (const f of batch)
            applyFlow(f);
        trimOldest();
        updateListChrome();
    }

    function applyFlow(f) {
        const id = Number(f.id);
        if (state.rows.has(id)) {
            const old = state.rows.get(id);
            const tr = renderRow(f);
            old.replaceWith(tr);
            state.rows.set(id, tr);
            state.flows.set(id, f);
            return;
        }
        const m = matchesFilters(f, state.filters);
        if (m === false)
            return;
        if (state.newerHidden) {
            if (m)
                state.newerCount++;
            return;
        }
        if (m === null) {
            scheduleCatchup();
            return;
        }
        /* Older than the rendered window while older pages exist: it will
         * come with them. */
        const last = $('flow-rows').lastElementChild;
        if (last && state.next !== null && id < Number(last.dataset.id))
            return;
        insertRow(f);
    }

    function scheduleCatchup() {
        if (state.catchupTimer)
            return;
        state.catchupTimer = setTimeout(() => {
            state.catchupTimer = 0;
            catchUp();
        }, CATCHUP_DELAY_MS);
    }

    /* Asks the server for the newest page and merges what is new: for live
     * flows only the server can match (body search) and after the event
     * stream reconnects (flows written during the gap). */
    async function catchUp() {
        if (state.loading || state.newerHidden)
            return;
        const gen = state.listGen;
        const top = $('flow-rows').firstElementChild;
        const topId = top ? Number(top.dataset.id) : -Infinity;
        try {
            const data = await apiJSON(flowsQuery({ limit: PAGE_FLOWS }));
            if (gen !== state.listGen || state.loading)
                return;
            const flows = data.flows || [];
            const fresh = flows.filter((f) => Number(f.id) > topId && !state.rows.has(Number(f.id)));
            if (top && fresh.length === flows.length && data.next !== null && data.next !== undefined) {
                reload(); /* more arrived than one page: the gap cannot be closed by merging */
                return;
            }
            fresh.sort((a, b) => Number(a.id) - Number(b.id));
            for (const f of fresh)
                insertRow(f);
            if (!top) {
                state.next = data.next === undefined ? null : data.next;
            }
            trimOldest();
            updateStats(data.stats);
            updateListChrome();
        } catch (e) {
            /* the next event or reconnect tries again */
        }
    }

    function onClear() {
        if (state.stats)
            updateStats({ stored: 0, dropped: state.stats.dropped });
        clearRows();
        closeDetail();
        updateListChrome();
    }

    function setLive(on, text) {
        const live = $('live');
        live.textContent = text || (on ? 'live' : 'reconnecting');
        live.classList.toggle('on', on);
        live.classList.toggle('off', !on);
    }

    function connectEvents() {
        if (state.events)
            state.events.close();
        /* EventSource cannot send headers: the API accepts the cookie for GET. */
        const es = new EventSource('/api/events');
        state.events = es;
        es.addEventListener('open', () => {
            setLive(true);
            state.eventsRetryMs = EVENTS_RETRY_MIN_MS;
            if (state.authFailed)
                showAuthError(false);
            if (state.eventsHadError) {
                state.eventsHadError = false;
                if (state.authFailed || state.rows.size === 0)
                    reload();
                else
                    catchUp();
            }
        });
        es.addEventListener('flow', (e) => {
            let f;
            try {
                f = JSON.parse(e.data);
            } catch (err) {
                return;
            }
            /* until the next heartbeat brings the real figure (pruning) */
            if (state.stats)
                updateStats({ stored: state.stats.stored + 1, dropped: state.stats.dropped });
            onFlow(f);
        });
        es.addEventListener('stats', (e) => {
            try {
                updateStats(JSON.parse(e.data));
            } catch (err) {
                /* a broken heartbeat is not worth a message */
            }
        });
        es.addEventListener('clear', onClear);
        es.addEventListener('error', () => {
            state.eventsHadError = true;
            if (es.readyState === EventSource.CLOSED) {
                /* The browser gives up on an HTTP error (401 after a restart
                 * with a new token): retry ourselves, slower each time. */
                setLive(false, 'disconnected');
                es.close();
                if (state.events === es)
                    state.events = null;
                const wait = state.eventsRetryMs;
                state.eventsRetryMs = Math.min(wait * 2, EVENTS_RETRY_MAX_MS);
                setTimeout(() => {
                    api('/api/stats').then((r) => r.json()).then(updateStats).catch(() => {});
                    connectEvents();
                }, wait);
            } else {
                setLive(false);
            }
        });
    }

    /* ---- keyboard and selection in the list ---- */

    function setCursor(id, focus) {
        if (state.cursor !== null && state.rows.has(state.cursor))
            state.rows.get(state.cursor).classList.remove('cursor');
        state.cursor = id;
        const tr = id !== null ? state.rows.get(id) : null;
        if (!tr)
            return;
        tr.classList.add('cursor');
        if (focus) {
            tr.focus({ preventScroll: true });
            tr.scrollIntoView({ block: 'nearest' });
        }
    }

    function moveCursor(delta) {
        const tbody = $('flow-rows');
        let tr = state.cursor !== null ? state.rows.get(state.cursor) : null;
        if (!tr)
            tr = delta > 0 ? tbody.firstElementChild : tbody.lastElementChild;
        else if (delta > 0)
            tr = tr.nextElementSibling || tr;
        else
            tr = tr.previousElementSibling || tr;
        if (tr)
            setCursor(Number(tr.dataset.id), true);
        if (delta > 0 && tr && !tr.nextElementSibling)
            loadOlder();
    }

    function toggleSelected(id, on) {
        if (on)
            state.selected.add(id);
        else
            state.selected.delete(id);
        const tr = state.rows.get(id);
        if (tr) {
            tr.classList.toggle('selected', on);
            tr.querySelector('input[type=checkbox]').checked = on;
        }
        updateSelectionChrome();
    }

    function onListKey(e) {
        if (e.altKey || e.ctrlKey || e.metaKey)
            return;
        const tbody = $('flow-rows');
        switch (e.key) {
        case 'ArrowDown':
            moveCursor(1);
            break;
        case 'ArrowUp':
            moveCursor(-1);
            break;
        case 'Home':
            if (tbody.firstElementChild)
                setCursor(Number(tbody.firstElementChild.dataset.id), true);
            break;
        case 'End':
            if (tbody.lastElementChild)
                setCursor(Number(tbody.lastElementChild.dataset.id), true);
            break;
        case 'Enter':
            if (state.cursor !== null)
                openFlow(state.cursor);
            break;
        case ' ':
            if (e.target.tagName === 'INPUT' || state.cursor === null)
                return;
            toggleSelected(state.cursor, !state.selected.has(state.cursor));
            break;
        case 'Escape':
            closeDetail();
            break;
        default:
            return;
        }
        e.preventDefault();
    }

    /* ---- the detail panel ---- */

    function revokeDetailUrls() {
        for (const u of state.detailUrls)
            URL.revokeObjectURL(u);
        state.detailUrls = [];
    }

    function closeDetail() {
        state.detailGen++;
        revokeDetailUrls();
        if (state.openId !== null && state.rows.has(state.openId)) {
            const tr = state.rows.get(state.openId);
            tr.classList.remove('open');
            tr.removeAttribute('aria-current');
        }
        const wasOpen = state.openId !== null;
        state.openId = null;
        state.openDetail = null;
        $('detail').hidden = true;
        $('split').classList.remove('has-detail');
        writeHash();
        if (wasOpen && state.cursor !== null && state.rows.has(state.cursor))
            state.rows.get(state.cursor).focus({ preventScroll: true });
    }

    function selectTab(name) {
        state.tab = name;
        for (const t of TABS) {
            const on = t === name;
            const tab = $('tab-' + t);
            tab.setAttribute('aria-selected', on ? 'true' : 'false');
            tab.tabIndex = on ? 0 : -1;
            $('panel-' + t).hidden = !on;
        }
    }

    async function openFlow(id) {
        id = Number(id);
        const gen = ++state.detailGen;
        revokeDetailUrls();
        if (state.openId !== null && state.rows.has(state.openId)) {
            state.rows.get(state.openId).classList.remove('open');
            state.rows.get(state.openId).removeAttribute('aria-current');
        }
        state.openId = id;
        state.openDetail = null;
        const tr = state.rows.get(id);
        if (tr) {
            tr.classList.add('open');
            tr.setAttribute('aria-current', 'true');
            setCursor(id, false);
        }
        writeHash();
        $('detail').hidden = false;
        $('split').classList.add('has-detail');
        $('d-curl-fallback').hidden = true;
        $('d-error').hidden = true;
        $('d-method').textContent = '';
        $('d-url').textContent = 'Loading flow ' + id + '\u2026';
        clear($('d-summary'));
        for (const p of TABS)
            clear($('panel-' + p));
        let d;
        try {
            d = await apiJSON('/api/flows/' + encodeURIComponent(id));
        } catch (e) {
            if (gen !== state.detailGen)
                return;
            $('d-url').textContent = e.status === 404
                ? 'Flow ' + id + ' is no longer stored.' : 'Could not load flow ' + id + ': ' + e.message;
            return;
        }
        if (gen !== state.detailGen)
            return;
        state.openDetail = d;
        renderDetail(d, gen);
        /* interact.js adds Replay and "Edit and resend" for this flow. */
        document.dispatchEvent(new CustomEvent('tapwire:detail', { detail: d }));
    }

    function chip(text, cls, title) {
        return el('span', { class: 'chip' + (cls ? ' ' + cls : ''), text: text, title: title || null });
    }

    function renderDetail(d, gen) {
        $('d-method').textContent = d.method || '';
        $('d-url').textContent = flowUrl(d);
        $('d-url').title = flowUrl(d);

        const sum = $('d-summary');
        clear(sum);
        if (d.response)
            sum.appendChild(chip(d.response.status + ' ' + (d.response.reason || ''), statusClass(d)));
        else if (d.status)
            sum.appendChild(chip(String(d.status), statusClass(d)));
        else
            sum.appendChild(chip(d.error ? 'no response' : 'no status', 'st-err'));
        if (d.request && d.request.version)
            sum.appendChild(chip(d.request.version));
        if (d.tls)
            sum.appendChild(chip('TLS', 'chip-tls'));
        if (d.kind && d.kind !== 'http')
            sum.appendChild(chip(d.kind));
        if (d.duration_ms !== null && d.duration_ms !== undefined)
            sum.appendChild(chip(humanDuration(d.duration_ms), null, 'total duration'));
        sum.appendChild(chip(humanSize(d.size) || '0 B', null, 'response body size'));
        if (d.client)
            sum.appendChild(chip('client ' + d.client));
        if (d.listener)
            sum.appendChild(chip('via ' + d.listener, null, 'the listener the client came in through'));
        if (d.bodies_dropped)
            sum.appendChild(chip('bodies dropped', 'st-err',
                'the database could not keep up, or the disk was full: the record was kept, the body bytes were not'));
        if (d.kind === 'tunnel' || d.kind === 'websocket') {
            sum.appendChild(chip('\u2191 ' + humanSize(d.bytes_up || 0) + ' \u2193 ' + humanSize(d.bytes_down || 0),
                null, 'bytes relayed up / down'));
        }
        if (d.rules)
            sum.appendChild(chip('Modified by: ' + d.rules, 'chip-mod', 'the rewrite rules that changed this flow; see Changes'));
        else if (d.modified)
            sum.appendChild(chip('Modified', 'chip-mod'));
        sum.appendChild(chip(isoTime(d.time), 'muted'));

        const err = $('d-error');
        err.hidden = !d.error;
        err.textContent = d.error ? 'Error: ' + d.error : '';

        renderMessage($('panel-request'), d, 'request', gen);
        renderMessage($('panel-response'), d, 'response', gen);
        renderTimings($('panel-timing'), d);
        renderTls($('panel-tls'), d);
        const tls = $('tab-tls');
        tls.classList.toggle('tab-fail', !!(d.tls && verificationFailed(d.tls.verification)));
        const changed = hasChanges(d);
        $('tab-changes').hidden = !changed;
        renderChanges($('panel-changes'), d, gen);
        if (!changed && state.tab === 'changes')
            selectTab('response');
        const isWs = d.kind === 'websocket';
        const isGrpc = isGrpcFlow(d);
        $('tab-messages').hidden = !isWs && !isGrpc;
        if (isWs)
            renderConversation($('panel-messages'), d, gen);
        else if (isGrpc)
            renderGrpc($('panel-messages'), d, gen);
        else if (state.tab === 'messages')
            selectTab('response');
    }

    function isGrpcFlow(d) {
        const types = [d.request && d.request.body && d.request.body.content_type,
            d.response && d.response.body && d.response.body.content_type];
        return types.some((t) => /^application\/grpc(\+|;|$)/i.test(String(t || '')));
    }

    /* A gRPC call's length-prefixed messages, request first, as text (or
     * hex when binary or compressed), never as markup. */
    async function renderGrpc(panel, d, gen) {
        clear(panel);
        const status = el('p', { class: 'muted', text: 'Loading gRPC messages\u2026' });
        const list = el('ol', { class: 'ws-messages', 'aria-label': 'gRPC messages' });
        panel.appendChild(status);
        panel.appendChild(list);
        let r;
        try {
            r = await apiJSON('/api/flows/' + encodeURIComponent(d.id) + '/grpc');
        } catch (e) {
            if (gen === state.detailGen)
                status.textContent = 'Could not load the gRPC messages: ' + e.message;
            return;
        }
        if (gen !== state.detailGen)
            return;
        let count = 0;
        for (const [side, fromClient] of [['request', true], ['response', false]]) {
            for (const m of r[side] || []) {
                const size = humanSize(m.length) + (m.compressed ? ' compressed' : '') +
                    (m.captured < m.length ? ', ' + humanSize(m.captured) + ' captured' : '');
                const head = el('div', { class: 'ws-head' },
                    el('span', { class: 'ws-dir', text: fromClient ? '\u2192 request message' : '\u2190 response message' }),
                    el('span', { class: 'muted', text: size }));
                const body = m.text !== undefined
                    ? el('pre', { class: 'ws-body mono', text: m.text })
                    : el('pre', { class: 'ws-body mono ws-hex', text: m.hex || '' });
                list.appendChild(el('li', { class: 'ws-msg ' + (fromClient ? 'ws-up' : 'ws-down') }, head, body));
                count++;
            }
        }
        status.textContent = count === 0 ? 'No gRPC messages.' :
            count + ' gRPC message' + (count === 1 ? '' : 's') + (d.error ? '; ' + d.error : '');
    }

    /* A WebSocket flow's messages as a conversation, fetched from the last
     * one shown on, and asked for again while the connection lasts (no
     * duration yet); payloads are shown as text, never as markup. */
    function renderConversation(panel, d, gen) {
        clear(panel);
        const list = el('ol', { class: 'ws-messages', 'aria-label': 'WebSocket messages' });
        const status = el('p', { class: 'muted', text: 'Loading messages\u2026' });
        panel.appendChild(status);
        panel.appendChild(list);
        let next = 0;
        const isLive = d.duration_ms === null || d.duration_ms === undefined;
        async function poll() {
            if (gen !== state.detailGen)
                return;
            let r;
            try {
                r = await apiJSON('/api/flows/' + encodeURIComponent(d.id) + '/messages?from=' + next);
            } catch (e) {
                if (gen === state.detailGen)
                    status.textContent = 'Could not load the messages: ' + e.message;
                return;
            }
            if (gen !== state.detailGen)
                return;
            for (const m of r.messages || []) {
                list.appendChild(wsMessageItem(m));
                next = Number(m.seq) + 1;
            }
            status.textContent = next === 0 ? 'No messages.' :
                next + ' message' + (next === 1 ? '' : 's') + (isLive ? ' so far (live)' : '');
            if (!isLive)
                return;
            setTimeout(async () => {
                if (gen !== state.detailGen)
                    return;
                /* The flow finished: its record says so, then the last messages. */
                let fresh;
                try {
                    fresh = await apiJSON('/api/flows/' + encodeURIComponent(d.id));
                } catch (e) {
                    fresh = null;
                }
                if (gen !== state.detailGen)
                    return;
                if (fresh && fresh.duration_ms !== null && fresh.duration_ms !== undefined) {
                    /* The detail carries the summary fields: the list row
                     * (written while the flow was open) catches up too. */
                    const rowId = Number(fresh.id);
                    if (state.rows.has(rowId)) {
                        applyFlow(fresh);
                        const tr = state.rows.get(rowId);
                        if (tr && state.openId === rowId) {
                            tr.classList.add('open');
                            tr.setAttribute('aria-current', 'true');
                        }
                    }
                    state.openDetail = fresh;
                    renderDetail(fresh, gen);
                    return;
                }
                poll();
            }, WS_POLL_MS);
        }
        poll();
    }

    function wsMessageItem(m) {
        const fromClient = m.direction === 'client';
        const size = humanSize(m.size) + (m.compressed ? ' compressed' : '') +
            (m.truncated ? ', ' + humanSize(m.captured) + ' shown' : '');
        const head = el('div', { class: 'ws-head' },
            el('span', { class: 'ws-dir', text: fromClient ? '\u2192 client to server' : '\u2190 server to client' }),
            chip(m.type + (m.close_code !== undefined ? ' ' + m.close_code : '')),
            el('span', { class: 'muted', text: clockTime(Number(m.time_us) / 1000) }),
            el('span', { class: 'muted', text: size }));
        const body = m.text !== undefined
            ? el('pre', { class: 'ws-body mono', text: m.text })
            : el('pre', { class: 'ws-body mono ws-hex', text: m.hex || '' });
        return el('li', { class: 'ws-msg ' + (fromClient ? 'ws-up' : 'ws-down') }, head, body);
    }

    function headersTable(headers) {
        if (!Array.isArray(headers) || headers.length === 0)
            return el('p', { class: 'muted', text: 'No headers.' });
        const tbody = el('tbody');
        for (const h of headers) {
            if (!Array.isArray(h))
                continue;
            tbody.appendChild(el('tr', null,
                el('th', { scope: 'row', class: 'h-name', text: String(h[0]) }),
                el('td', { class: 'h-value', text: String(h[1] === undefined ? '' : h[1]) })));
        }
        return el('table', { class: 'headers' },
            el('thead', { class: 'sr-only' }, el('tr', null,
                el('th', { scope: 'col', text: 'Name' }), el('th', { scope: 'col', text: 'Value' }))),
            tbody);
    }

    function headerValue(headers, name) {
        if (!Array.isArray(headers))
            return '';
        name = name.toLowerCase();
        for (const h of headers) {
            if (Array.isArray(h) && String(h[0]).toLowerCase() === name)
                return String(h[1]);
        }
        return '';
    }

    function renderMessage(panel, d, part, gen) {
        clear(panel);
        const m = d[part];
        if (!m) {
            panel.appendChild(el('p', { class: 'muted', text: part === 'response'
                ? (d.error ? 'No response: ' + d.error : 'No response.') : 'No request recorded.' }));
            return;
        }
        const line = part === 'request'
            ? (d.method || '') + ' ' + (d.kind === 'tunnel' ? hostPort(d.host, d.port, '') : (d.path || '')) +
              ' ' + (m.version || '')
            : (m.version || '') + ' ' + (m.status !== undefined ? m.status : d.status) + ' ' + (m.reason || '');
        panel.appendChild(el('div', { class: 'start-line mono', text: line }));
        panel.appendChild(el('h3', { text: 'Headers' }));
        panel.appendChild(headersTable(m.headers));
        const ct = (m.body && m.body.content_type) || headerValue(m.headers, 'content-type') ||
            (part === 'response' ? d.content_type || '' : '');
        panel.appendChild(bodySection(d, part, m.body, ct, gen));
    }

    function capturedBytes(meta) {
        if (typeof meta.captured === 'number')
            return meta.captured;
        if (meta.captured === false)
            return 0;
        return Number(meta.size) || 0;
    }

    function bodySection(d, part, meta, ct, gen) {
        const sec = el('section', { class: 'body', 'aria-label': part + ' body' });
        const head = el('div', { class: 'body-head' }, el('h3', { text: 'Body' }));
        sec.appendChild(head);
        if (!meta || (Number(meta.size) === 0 && !capturedBytes(meta))) {
            sec.appendChild(el('p', { class: 'muted', text: 'No body.' }));
            return sec;
        }
        const size = Number(meta.size) || 0;
        const captured = capturedBytes(meta);
        const facts = el('span', { class: 'body-facts muted' });
        facts.textContent = [humanSize(size), mimeType(ct), meta.content_encoding || '']
            .filter(Boolean).join(' \u00b7 ');
        head.appendChild(facts);
        const base = '/api/flows/' + encodeURIComponent(d.id) + '/' + part + '/body';
        const stem = 'flow-' + d.id + '-' + part;
        head.appendChild(el('span', { class: 'spacer' }));
        head.appendChild(el('button', {
            type: 'button', text: 'Download raw',
            title: 'the bytes as captured' + (meta.content_encoding ? ' (' + meta.content_encoding + ')' : ''),
            onclick: () => download(base, stem + '.bin'),
        }));
        if (meta.content_encoding) {
            head.appendChild(el('button', {
                type: 'button', text: 'Download decoded',
                onclick: () => download(base + '?decode=1', stem + '.decoded.bin'),
            }));
        }
        const notes = el('div', { class: 'body-notes' });
        sec.appendChild(notes);
        if (meta.truncated || captured < size) {
            notes.appendChild(el('p', {
                class: 'note note-warn',
                text: 'truncated (' + captured.toLocaleString() + ' of ' + size.toLocaleString() +
                    ' bytes captured)',
            }));
        }
        if (captured === 0) {
            notes.appendChild(el('p', { class: 'muted', text: 'Not captured.' }));
            return sec;
        }
        const modes = el('div', { class: 'view-modes', role: 'group', 'aria-label': 'Show the body as' });
        const view = el('div', { class: 'body-view' }, el('p', { class: 'muted', text: 'Loading body\u2026' }));
        sec.appendChild(modes);
        sec.appendChild(view);

        (async () => {
            let res, bytes;
            try {
                res = await api(base + '?decode=1');
                bytes = new Uint8Array(await res.arrayBuffer());
            } catch (e) {
                if (gen !== state.detailGen)
                    return;
                clear(view);
                view.appendChild(el('p', { class: 'note note-error', text: 'Could not load the body: ' + e.message }));
                return;
            }
            if (gen !== state.detailGen)
                return;
            const decodeError = res.headers.get('X-Tapwire-Decode-Error');
            if (decodeError) {
                notes.appendChild(el('p', {
                    class: 'note note-error',
                    text: 'Decoding ' + (meta.content_encoding || 'the body') + ' failed (' + decodeError +
                        '); showing the bytes as captured.',
                }));
            } else if (res.headers.get('X-Tapwire-Decoded') === '1') {
                notes.appendChild(el('p', {
                    class: 'note muted',
                    text: 'Decoded from ' + (meta.content_encoding || 'its content encoding') + ': ' +
                        captured.toLocaleString() + ' \u2192 ' + bytes.length.toLocaleString() + ' bytes.',
                }));
            }
            showWithModes(modes, view, bytes, ct, !!meta.truncated || captured < size);
        })();
        return sec;
    }

    /* Auto / Text / Hex buttons in modes, showing bytes in view. */
    function showWithModes(modes, view, bytes, ct, truncated) {
        const choices = [['auto', 'Auto'], ['text', 'Text'], ['hex', 'Hex']];
        const buttons = [];
        const show = (mode) => {
            for (const b of buttons)
                b.setAttribute('aria-pressed', b.dataset.mode === mode ? 'true' : 'false');
            clear(view);
            renderBody(view, bytes, ct, mode, truncated);
        };
        clear(modes);
        for (const [mode, label] of choices) {
            const b = el('button', { type: 'button', 'data-mode': mode, text: label, onclick: () => show(mode) });
            buttons.push(b);
            modes.appendChild(b);
        }
        show('auto');
    }

    /* The body as text when it is text: UTF-8 (or the declared charset)
     * without NUL bytes. null for binary. */
    function bytesToText(bytes, ct, truncated) {
        if (bytes.includes(0))
            return null;
        const cs = charsetOf(ct);
        if (cs && cs !== 'utf-8' && cs !== 'utf8') {
            try {
                return new TextDecoder(cs).decode(bytes);
            } catch (e) {
                /* unknown label: try UTF-8 */
            }
        }
        try {
            /* stream: a body cut by the capture limit may end mid-character */
            return new TextDecoder('utf-8', { fatal: true }).decode(bytes, { stream: truncated });
        } catch (e) {
            return null;
        }
    }

    function isJsonType(ct) {
        const t = mimeType(ct);
        return t === 'application/json' || t.endsWith('+json') || t === 'text/json';
    }

    /* Re-indents JSON text that JSON.parse accepted. Works on the tokens, not
     * on parsed values, so numbers beyond double precision and string
     * escapes are shown exactly as they came. */
    function prettyJson(text) {
        JSON.parse(text); /* throws on anything that is not JSON */
        const out = [];
        let depth = 0;
        let i = 0;
        const n = text.length;
        const nl = () => '\n' + '  '.repeat(depth);
        const nextSignificant = (j) => {
            while (j < n && /\s/.test(text[j]))
                j++;
            return text[j];
        };
        while (i < n) {
            const c = text[i];
            if (c === '"') {
                let j = i + 1;
                while (j < n && text[j] !== '"')
                    j += text[j] === '\\' ? 2 : 1;
                out.push(text.slice(i, j + 1));
                i = j + 1;
                continue;
            }
            if (c === '{' || c === '[') {
                const close = c === '{' ? '}' : ']';
                if (nextSignificant(i + 1) === close) {
                    out.push(c + close);
                    i = text.indexOf(close, i + 1) + 1;
                    continue;
                }
                depth++;
                out.push(c + nl());
            } else if (c === '}' || c === ']') {
                depth--;
                out.push(nl() + c);
            } else if (c === ',') {
                out.push(',' + nl());
            } else if (c === ':') {
                out.push(': ');
            } else if (!/\s/.test(c)) {
                out.push(c);
            }
            i++;
        }
        return out.join('');
    }

    const HEX = Array.from({ length: 256 }, (_, b) => b.toString(16).padStart(2, '0'));

    function hexDump(bytes, limit) {
        const n = Math.min(bytes.length, limit);
        const lines = [];
        for (let off = 0; off < n; off += 16) {
            let hex = '';
            let ascii = '';
            for (let k = 0; k < 16; k++) {
                if (k === 8)
                    hex += ' ';
                if (off + k < n) {
                    const b = bytes[off + k];
                    hex += HEX[b] + ' ';
                    ascii += b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : '.';
                } else {
                    hex += '   ';
                }
            }
            lines.push(off.toString(16).padStart(8, '0') + '  ' + hex + ' ' + ascii);
        }
        return lines.join('\n');
    }

    function renderHex(view, bytes) {
        view.appendChild(el('pre', { class: 'body-hex mono', text: hexDump(bytes, HEX_LIMIT_BYTES) }));
        if (bytes.length > HEX_LIMIT_BYTES) {
            view.appendChild(el('p', {
                class: 'note muted',
                text: 'Showing the first ' + humanSize(HEX_LIMIT_BYTES) + ' of ' +
                    bytes.length.toLocaleString() + ' bytes; download the body for the rest.',
            }));
        }
    }

    function renderText(view, text) {
        const cut = text.length > TEXT_LIMIT_CHARS;
        view.appendChild(el('pre', { class: 'body-text mono', text: cut ? text.slice(0, TEXT_LIMIT_CHARS) : text }));
        if (cut) {
            view.appendChild(el('p', {
                class: 'note muted',
                text: 'Showing the first ' + TEXT_LIMIT_CHARS.toLocaleString() + ' characters; download the body for the rest.',
            }));
        }
    }

    function renderImage(view, bytes, ct) {
        const url = URL.createObjectURL(new Blob([bytes], { type: mimeType(ct) }));
        state.detailUrls.push(url);
        const info = el('p', { class: 'note muted' });
        const img = el('img', { class: 'body-image', src: url, alt: 'the body as an image (' + mimeType(ct) + ')' });
        img.addEventListener('load', () => {
            info.textContent = img.naturalWidth + ' \u00d7 ' + img.naturalHeight + ' px, ' + humanSize(bytes.length);
        });
        img.addEventListener('error', () => {
            img.remove();
            info.textContent = 'The browser cannot show this as ' + mimeType(ct) + '; the bytes:';
            renderHex(view, bytes);
        });
        view.appendChild(el('div', { class: 'image-box' }, img));
        view.appendChild(info);
    }

    function renderBody(view, bytes, ct, mode, truncated) {
        if (bytes.length === 0) {
            view.appendChild(el('p', { class: 'muted', text: 'Empty body.' }));
            return;
        }
        if (mode === 'hex') {
            renderHex(view, bytes);
            return;
        }
        if (mode === 'auto' && mimeType(ct).startsWith('image/')) {
            renderImage(view, bytes, ct);
            return;
        }
        const text = bytesToText(bytes, ct, truncated);
        if (text === null) {
            if (mode === 'text') {
                renderText(view, new TextDecoder('utf-8').decode(bytes));
                return;
            }
            view.appendChild(el('p', { class: 'note muted', text: 'Binary data (not UTF-8 text).' }));
            renderHex(view, bytes);
            return;
        }
        if (mode === 'auto' && text.length <= PRETTY_LIMIT_CHARS &&
            (isJsonType(ct) || (!mimeType(ct) || mimeType(ct) === 'text/plain') && /^\s*[[{]/.test(text))) {
            try {
                const pretty = prettyJson(text);
                view.appendChild(el('pre', { class: 'body-text body-json mono', text: pretty }));
                return;
            } catch (e) {
                if (isJsonType(ct))
                    view.appendChild(el('p', { class: 'note muted', text: 'Not valid JSON (' + e.message + '); shown as text.' }));
            }
        }
        renderText(view, text);
    }

    /* ---- what rewrite rules changed ---- */

    function hasChanges(d) {
        return !!(d.rules || d.rules_notes || d.original);
    }

    /* A line diff (longest common subsequence): [[' ' | '-' | '+', line]...],
     * or null when the lists are too long to diff here. */
    function diffLines(a, b) {
        const n = a.length;
        const m = b.length;
        if (n > DIFF_MAX_LINES || m > DIFF_MAX_LINES)
            return null;
        const lcs = Array.from({ length: n + 1 }, () => new Uint16Array(m + 1));
        for (let i = n - 1; i >= 0; i--) {
            for (let j = m - 1; j >= 0; j--)
                lcs[i][j] = a[i] === b[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
        }
        const out = [];
        let i = 0;
        let j = 0;
        while (i < n && j < m) {
            if (a[i] === b[j]) {
                out.push([' ', a[i]]);
                i++;
                j++;
            } else if (lcs[i + 1][j] >= lcs[i][j + 1]) {
                out.push(['-', a[i++]]);
            } else {
                out.push(['+', b[j++]]);
            }
        }
        while (i < n)
            out.push(['-', a[i++]]);
        while (j < m)
            out.push(['+', b[j++]]);
        return out;
    }

    function headerLines(headers) {
        if (!Array.isArray(headers))
            return [];
        return headers.filter(Array.isArray).map((h) => String(h[0]) + ': ' + String(h[1] === undefined ? '' : h[1]));
    }

    /* Original against sent, one line each: removed lines red, added green. */
    function diffView(before, after, label) {
        const rows = diffLines(before, after) ||
            before.map((l) => ['-', l]).concat(after.map((l) => ['+', l]));
        const box = el('div', { class: 'diff mono', role: 'group', 'aria-label': label });
        if (!rows.some((r) => r[0] !== ' '))
            box.appendChild(el('p', { class: 'muted', text: 'No differences.' }));
        for (const [sign, line] of rows) {
            if (sign === '-')
                box.appendChild(el('del', { class: 'diff-line diff-del', title: 'as received (removed by a rule)' }, '\u2212 ' + line));
            else if (sign === '+')
                box.appendChild(el('ins', { class: 'diff-line diff-add', title: 'as sent (added by a rule)' }, '+ ' + line));
            else
                box.appendChild(el('div', { class: 'diff-line diff-same' }, '\u00a0 ' + line));
        }
        return box;
    }

    /* One side of a body comparison: the bytes of path with the usual views. */
    function comparePane(title, cls, path, meta, ct, gen) {
        const pane = el('div', { class: 'compare-pane ' + cls });
        const size = Number(meta && meta.size) || 0;
        const captured = meta ? capturedBytes(meta) : 0;
        const truncated = !!(meta && meta.truncated) || captured < size;
        pane.appendChild(el('div', { class: 'body-head' },
            el('h4', { text: title }),
            el('span', { class: 'body-facts muted', text: [humanSize(size), mimeType(ct)].filter(Boolean).join(' \u00b7 ') })));
        if (truncated) {
            pane.appendChild(el('p', {
                class: 'note note-warn',
                text: 'truncated (' + captured.toLocaleString() + ' of ' + size.toLocaleString() + ' bytes captured)',
            }));
        }
        if (captured === 0) {
            pane.appendChild(el('p', { class: 'muted', text: size === 0 ? 'Empty body.' : 'Not captured.' }));
            return pane;
        }
        const modes = el('div', { class: 'view-modes', role: 'group', 'aria-label': 'Show the ' + title.toLowerCase() + ' as' });
        const view = el('div', { class: 'body-view' }, el('p', { class: 'muted', text: 'Loading body\u2026' }));
        pane.appendChild(modes);
        pane.appendChild(view);
        (async () => {
            let bytes;
            try {
                const res = await api(path);
                bytes = new Uint8Array(await res.arrayBuffer());
            } catch (e) {
                if (gen !== state.detailGen)
                    return;
                clear(view);
                view.appendChild(el('p', { class: 'note note-error', text: 'Could not load the body: ' + e.message }));
                return;
            }
            if (gen !== state.detailGen)
                return;
            showWithModes(modes, view, bytes, ct, truncated);
        })();
        return pane;
    }

    function bodyCompare(d, part, original, gen) {
        const m = d[part] || {};
        const sentCt = (m.body && m.body.content_type) || headerValue(m.headers, 'content-type');
        const originalHeaders = original[part + '_headers'];
        const originalCt = originalHeaders ? headerValue(originalHeaders, 'content-type') : sentCt;
        const base = '/api/flows/' + encodeURIComponent(d.id) + '/' + part + '/body';
        const sec = el('section', { class: 'compare', 'aria-label': part + ' body: original and sent' });
        sec.appendChild(el('h3', { text: part === 'request' ? 'Request body' : 'Response body' }));
        sec.appendChild(el('p', {
            class: 'note muted',
            text: 'The original is shown as the rules saw it: decoded from its Content-Encoding.',
        }));
        sec.appendChild(el('div', { class: 'compare-panes' },
            /* Originals are stored decoded: no ?decode=1 for them. */
            comparePane('Original (received)', 'compare-original', base + '?original=1',
                original[part + '_body'], originalCt, gen),
            comparePane('Sent (after the rules)', 'compare-sent', base + '?decode=1', m.body, sentCt, gen)));
        return sec;
    }

    function renderChanges(panel, d, gen) {
        clear(panel);
        if (!hasChanges(d)) {
            panel.appendChild(el('p', { class: 'muted', text: 'No rule changed this flow.' }));
            return;
        }
        panel.appendChild(el('p', { class: 'changes-by' },
            'Modified by: ', el('strong', { class: 'mono', text: d.rules || 'no rule' })));
        if (d.rules_notes) {
            panel.appendChild(el('p', {
                class: 'note note-warn', text: 'A matching rule did not apply: ' + d.rules_notes,
            }));
        }
        const o = d.original;
        if (!o) {
            panel.appendChild(el('p', { class: 'muted', text: 'Nothing of this flow was rewritten.' }));
            return;
        }
        if (o.target !== null && o.target !== undefined) {
            panel.appendChild(el('h3', { text: 'Request target' }));
            panel.appendChild(diffView([String(o.target)], [String(d.path || '')], 'request target: original and sent'));
        }
        if (Array.isArray(o.request_headers)) {
            panel.appendChild(el('h3', { text: 'Request headers' }));
            panel.appendChild(diffView(headerLines(o.request_headers), headerLines(d.request && d.request.headers),
                'request headers: original and sent'));
        }
        if (o.request_body)
            panel.appendChild(bodyCompare(d, 'request', o, gen));
        if (Array.isArray(o.response_headers)) {
            panel.appendChild(el('h3', { text: 'Response headers' }));
            panel.appendChild(diffView(headerLines(o.response_headers), headerLines(d.response && d.response.headers),
                'response headers: original and sent'));
        }
        if (o.response_body)
            panel.appendChild(bodyCompare(d, 'response', o, gen));
    }

    /* ---- timings and TLS ---- */

    /* Phases of one exchange, from the request head (start) to the last
     * byte to the client (done). An intercepted TLS connection, or a reused
     * one, was connected before the request: those steps happened earlier
     * and are reported as durations, not drawn on this request's bars. */
    function renderTimings(panel, d) {
        clear(panel);
        const t = d.timings || {};
        const val = (k) => (t[k] === null || t[k] === undefined || !Number.isFinite(Number(t[k])) ? null : Number(t[k]));
        const start = val('start');
        if (start === null) {
            panel.appendChild(el('p', { class: 'muted', text: 'No timings recorded.' }));
            return;
        }
        const marks = ['connected', 'tls_done', 'request_sent', 'first_byte', 'done'];
        let end = start;
        for (const k of marks) {
            if (val(k) !== null)
                end = Math.max(end, val(k));
        }
        const total = Math.max(end - start, 0.001);
        const phases = [
            ['Connect', 'connected'],
            ['TLS handshake', 'tls_done'],
            ['Send request', 'request_sent'],
            ['Wait (TTFB)', 'first_byte'],
            ['Receive', 'done'],
        ];
        const tbody = el('tbody');
        let earlier = null;
        for (const [label, key] of phases) {
            const at = val(key);
            /* A phase starts at the latest step before it that happened:
             * plain HTTP has no TLS step, a failed connect no later ones. */
            let from = start;
            for (const k of marks.slice(0, marks.indexOf(key))) {
                if (val(k) !== null)
                    from = Math.max(from, val(k));
            }
            const bar = svg('svg', { class: 'wf', viewBox: '0 0 1000 10', preserveAspectRatio: 'none', 'aria-hidden': 'true' });
            let text = '\u2014';
            if (at !== null && at < start) {
                /* set up before this request */
                const prev = key === 'tls_done' ? val('connected') : null;
                text = prev !== null && at >= prev ? humanDuration(at - prev) + ' before' : 'before';
                earlier = earlier === null ? at : Math.min(earlier, at);
            } else if (at !== null) {
                const x = ((from - start) / total) * 1000;
                const w = Math.max(((at - from) / total) * 1000, 2);
                bar.appendChild(svg('rect', { class: 'wf-' + key, x: x.toFixed(1), y: '0', width: w.toFixed(1), height: '10' }));
                text = humanDuration(at - from);
            }
            tbody.appendChild(el('tr', { class: at === null || at < start ? 'muted' : null },
                el('th', { scope: 'row', text: label }),
                el('td', { class: 'wf-cell' }, bar),
                el('td', { class: 'num', text: text })));
        }
        const done = val('done');
        tbody.appendChild(el('tr', { class: 'wf-total' },
            el('th', { scope: 'row', text: 'Total' }),
            el('td', { class: 'wf-cell' }),
            el('td', { class: 'num', text: done !== null ? humanDuration(done - start)
                : (d.duration_ms !== null && d.duration_ms !== undefined ? humanDuration(d.duration_ms) : 'unfinished') })));
        panel.appendChild(el('table', { class: 'timings' },
            el('thead', null, el('tr', null,
                el('th', { scope: 'col', text: 'Phase' }),
                el('th', { scope: 'col', text: 'From the request head to the last byte' }),
                el('th', { scope: 'col', class: 'num', text: 'Time' }))),
            tbody));
        panel.appendChild(el('p', { class: 'muted', text: 'Request head complete at ' + isoTime(start) + '.' }));
        if (earlier !== null) {
            panel.appendChild(el('p', { class: 'muted', text: 'The upstream connection was ready before this request: ' +
                'opened ' + humanDuration(start - earlier) + ' earlier (when the client\'s tunnel was set up, or for an ' +
                'earlier request on the same connection).' }));
        }
        if (d.bytes_up || d.bytes_down) {
            panel.appendChild(el('p', { class: 'muted', text: 'Relayed ' + humanSize(d.bytes_up || 0) + ' up, ' +
                humanSize(d.bytes_down || 0) + ' down.' }));
        }
    }

    function verificationFailed(v) {
        if (v === null || v === undefined || v === true)
            return false;
        if (v === false)
            return true;
        return !/^(ok|verified)\b/i.test(String(v));
    }

    function notAfter(v) {
        if (v === null || v === undefined || v === '' || v === 0)
            return '';
        if (typeof v === 'number') {
            /* seconds, or milliseconds if it is that large */
            const ms = v > 1e11 ? v : v * 1000;
            const d = new Date(ms);
            const left = Math.round((ms - Date.now()) / 86400000);
            return d.toISOString() + (left < 0 ? ' (expired ' + -left + ' days ago)' : ' (in ' + left + ' days)');
        }
        return String(v);
    }

    function renderTls(panel, d) {
        clear(panel);
        const t = d.tls;
        if (!t) {
            panel.appendChild(el('p', { class: 'muted', text: d.scheme === 'https' || d.kind === 'tunnel'
                ? 'No TLS details were recorded for this flow.' : 'Not a TLS flow (plain HTTP).' }));
            return;
        }
        const dl = (rows, none) => {
            const list = el('dl', { class: 'kv' });
            for (const [k, v] of rows) {
                if (v === null || v === undefined || v === '')
                    continue;
                list.appendChild(el('dt', { text: k }));
                list.appendChild(el('dd', { class: 'mono' }, v));
            }
            return list.firstChild ? list : el('p', { class: 'muted', text: none });
        };
        const failed = verificationFailed(t.verification);
        if (t.verification !== null && t.verification !== undefined) {
            panel.appendChild(el('div', {
                class: 'verify ' + (failed ? 'verify-fail' : 'verify-ok'),
                role: failed ? 'alert' : null,
            }, el('strong', { text: failed ? 'Upstream verification failed: ' : 'Upstream verification: ' }),
            String(t.verification === true ? 'ok' : t.verification)));
        }
        panel.appendChild(el('h3', { text: 'Client side (browser \u2194 tapwire)' }));
        panel.appendChild(dl([
            ['SNI', t.client_sni], ['ALPN', t.client_alpn], ['Version', t.client_version], ['Cipher', t.client_cipher],
        ], 'Not recorded.'));
        panel.appendChild(el('h3', { text: 'Upstream side (tapwire \u2194 origin)' }));
        panel.appendChild(dl([['Version', t.upstream_version], ['Cipher', t.upstream_cipher]],
            'No TLS session with the origin (the connection or the handshake failed).'));
        panel.appendChild(el('h3', { text: 'Origin certificate' }));
        let sans = t.cert_sans;
        if (typeof sans === 'string')
            sans = sans.split(/,\s*/).filter(Boolean);
        const sanList = Array.isArray(sans) && sans.length
            ? el('ul', { class: 'sans' }, sans.map((s) => el('li', { text: String(s) }))) : null;
        const exp = notAfter(t.cert_not_after);
        panel.appendChild(dl([
            ['Subject', t.cert_subject], ['Issuer', t.cert_issuer], ['SANs', sanList],
            ['Not after', exp ? el('span', { class: /expired/.test(exp) ? 'bad' : null, text: exp }) : null],
        ], 'No certificate was received.'));
    }

    /* ---- actions ---- */

    async function copyText(text) {
        try {
            if (navigator.clipboard && window.isSecureContext) {
                await navigator.clipboard.writeText(text);
                $('d-curl-fallback').hidden = true;
                toast('Copied the curl command');
                return;
            }
        } catch (e) {
            /* no permission or no focus: fall back to a selected textarea */
        }
        const box = $('d-curl-fallback');
        const ta = $('d-curl-text');
        ta.value = text;
        box.hidden = false;
        ta.focus();
        ta.select();
        let ok = false;
        try {
            ok = document.execCommand('copy');
        } catch (e) {
            ok = false;
        }
        toast(ok ? 'Copied the curl command' : 'Press Ctrl+C to copy the selected command');
    }

    /* POST /api/har with the file as it is; the imported flows arrive in
     * the list as live flows. */
    async function importHar(file) {
        try {
            const res = await api('/api/har', {
                method: 'POST',
                headers: { 'Content-Type': 'application/json' },
                body: file,
            });
            const r = await res.json();
            let msg = 'Imported ' + r.imported + (r.imported === 1 ? ' flow' : ' flows');
            if (r.skipped > 0)
                msg += ', skipped ' + r.skipped + ' (' + r.first_skipped + ')';
            toast(msg);
        } catch (e) {
            if (e.status !== 401)
                toast('Import failed: ' + e.message);
        }
    }

    async function exportHar(ids) {
        if (ids === null) {
            /* "All" is what the list shows: the same filters. */
            const p = filterParams().toString();
            await download('/api/har' + (p ? '?' + p : ''), 'tapwire.har');
            return;
        }
        if (ids.length <= HAR_IDS_PER_QUERY) {
            await download('/api/har?ids=' + ids.join(','), 'tapwire.har');
            return;
        }
        /* Many ids: several queries, one HAR (entries merged, newest first). */
        try {
            let har = null;
            for (let i = 0; i < ids.length; i += HAR_IDS_PER_QUERY) {
                const part = await apiJSON('/api/har?ids=' + ids.slice(i, i + HAR_IDS_PER_QUERY).join(','));
                if (!har)
                    har = part;
                else
                    har.log.entries = har.log.entries.concat(part.log.entries || []);
            }
            har.log.entries.sort((a, b) => String(b.startedDateTime).localeCompare(String(a.startedDateTime)));
            saveBlob(new Blob([JSON.stringify(har, null, 2)], { type: 'application/json' }), 'tapwire.har');
        } catch (e) {
            if (e.status !== 401)
                toast('Export failed: ' + e.message);
        }
    }

    async function clearAll() {
        if (!window.confirm('Delete all captured flows? This cannot be undone.'))
            return;
        try {
            await api('/api/flows', { method: 'DELETE' });
            onClear();
            toast('All flows deleted');
        } catch (e) {
            if (e.status !== 401)
                toast('Could not clear: ' + e.message);
        }
    }

    async function deleteOpen() {
        const id = state.openId;
        if (id === null)
            return;
        try {
            await api('/api/flows/' + encodeURIComponent(id), { method: 'DELETE' });
        } catch (e) {
            if (e.status !== 404) {
                if (e.status !== 401)
                    toast('Could not delete: ' + e.message);
                return;
            }
        }
        const tr = state.rows.get(id);
        const nextTr = tr ? (tr.nextElementSibling || tr.previousElementSibling) : null;
        if (tr)
            forgetRow(tr);
        closeDetail();
        if (nextTr)
            setCursor(Number(nextTr.dataset.id), true);
        updateListChrome();
    }

    /* ---- the rules view ---- */

    function setView(view) {
        state.view = ['rules', 'sql'].includes(view) ? view : 'flows';
        const isFlows = state.view === 'flows';
        $('rules-view').hidden = state.view !== 'rules';
        $('sql-view').hidden = state.view !== 'sql';
        $('split').hidden = !isFlows;
        $('filters').hidden = !isFlows;
        $('view-rules').setAttribute('aria-pressed', state.view === 'rules' ? 'true' : 'false');
        $('view-sql').setAttribute('aria-pressed', state.view === 'sql' ? 'true' : 'false');
        $('view-flows').setAttribute('aria-pressed', isFlows ? 'true' : 'false');
        writeHash();
        if (state.view === 'rules')
            loadRules();
        if (state.view === 'sql')
            loadSqlExamples();
    }

    /* ---- the SQL view: results are text, never HTML ---- */

    let sqlExamplesLoaded = false;

    async function loadSqlExamples() {
        if (sqlExamplesLoaded)
            return;
        try {
            const list = await apiJSON('/api/sql/examples');
            const box = $('sql-examples');
            clear(box);
            for (const ex of list) {
                box.appendChild(el('button', {
                    type: 'button', class: 'sql-example', text: ex.name, title: ex.sql,
                    onclick: () => { $('sql-input').value = ex.sql; runSql(); },
                }));
            }
            sqlExamplesLoaded = true;
        } catch (e) {
            $('sql-examples').textContent = 'none (' + e.message + ')';
        }
    }

    async function runSql(ev) {
        if (ev)
            ev.preventDefault();
        const notice = $('sql-notice');
        const q = $('sql-input').value.trim();
        notice.hidden = true;
        if (!q)
            return;
        $('sql-meta').textContent = 'running\u2026';
        try {
            const r = await apiJSON('/api/sql?q=' + encodeURIComponent(q));
            const head = $('sql-head');
            const rows = $('sql-rows');
            clear(head);
            clear(rows);
            for (const c of r.columns)
                head.appendChild(el('th', { scope: 'col', text: String(c) }));
            for (const row of r.rows) {
                const tr = el('tr');
                for (const v of row)
                    tr.appendChild(el('td', { text: v === null ? 'NULL' : String(v) }));
                rows.appendChild(tr);
            }
            $('sql-table').hidden = false;
            $('sql-meta').textContent = r.rows.length + ' row' + (r.rows.length === 1 ? '' : 's') +
                (r.truncated ? ' (cut at ' + r.max_rows + ')' : '') + ' in ' + r.elapsed_ms + ' ms';
        } catch (e) {
            $('sql-table').hidden = true;
            $('sql-meta').textContent = '';
            notice.textContent = e.message;
            notice.hidden = false;
        }
    }

    function updateRulesCount() {
        const n = rulesState.rules.filter((r) => r.enabled).length + rulesState.statics.length;
        $('rules-count').textContent = n ? ' ' + n : '';
        $('view-rules').title = 'Rewrite rules' + (n ? ': ' + n + ' in effect' : '');
    }

    function rulesNotice(msg) {
        const n = $('rules-notice');
        n.textContent = msg || '';
        n.hidden = !msg;
    }

    async function loadRules() {
        const gen = ++rulesState.gen;
        try {
            const data = await apiJSON('/api/rules');
            if (gen === rulesState.gen)
                applyRules(data);
        } catch (e) {
            if (gen === rulesState.gen && e.status !== 401)
                rulesNotice('Could not load the rules: ' + e.message);
        }
    }

    function applyRules(data) {
        rulesState.rules = Array.isArray(data.rules) ? data.rules : [];
        rulesState.statics = Array.isArray(data.static) ? data.static.map(String) : [];
        rulesState.available = data.available !== false;
        if (rulesState.editing !== null && !rulesState.rules.some((r) => Number(r.id) === rulesState.editing))
            rulesState.editing = null;
        rulesNotice('');
        renderRules();
    }

    /* Shows an error of the API beside the input it is about; the parser's
     * "column N: ..." also puts the caret there. */
    function showSpecError(box, input, msg) {
        box.textContent = msg;
        box.hidden = false;
        input.setAttribute('aria-invalid', 'true');
        const m = /column (\d+)/.exec(msg);
        input.focus();
        if (m) {
            const at = Math.min(Math.max(Number(m[1]) - 1, 0), input.value.length);
            input.setSelectionRange(at, Math.min(at + 1, input.value.length));
        }
    }

    function hideSpecError(box, input) {
        box.textContent = '';
        box.hidden = true;
        input.removeAttribute('aria-invalid');
    }

    const JSON_HEADERS = { 'Content-Type': 'application/json' };

    /* One change through the API, then the list as the server has it. A
     * 400 goes to onError (the parser's message about the spec, shown while
     * the input is still there: no reload then), other failures to a toast. */
    async function changeRules(path, method, body, onError) {
        if (rulesState.busy)
            return false;
        rulesState.busy = true;
        let ok = false;
        let specError = null;
        try {
            const opts = { method };
            if (body !== undefined) {
                opts.headers = JSON_HEADERS;
                opts.body = JSON.stringify(body);
            }
            const res = await api(path, opts);
            if (path === '/api/rules/reorder')
                applyRules(await res.json()); /* it answers with the new list */
            ok = true;
        } catch (e) {
            if (onError && e.status === 400)
                specError = e.message;
            else if (e.status !== 401)
                toast('Could not change the rules: ' + e.message);
        } finally {
            rulesState.busy = false;
        }
        if (specError !== null)
            onError(specError);
        else if (!(ok && path === '/api/rules/reorder'))
            await loadRules();
        return ok;
    }

    async function addRule(e) {
        e.preventDefault();
        const input = $('rule-add-spec');
        const box = $('rule-add-error');
        const spec = input.value.trim();
        if (!spec) {
            showSpecError(box, input, 'Write a rule first, e.g. ' + input.placeholder);
            return;
        }
        hideSpecError(box, input);
        const ok = await changeRules('/api/rules', 'POST', { spec, enabled: true },
            (msg) => showSpecError(box, input, msg));
        if (ok) {
            input.value = '';
            toast('Rule added: it applies from the next request on');
        }
    }

    function editRule(id) {
        rulesState.editing = id;
        renderRules();
        const input = document.querySelector('#rule-rows tr[data-rule-id="' + id + '"] input.rule-edit');
        if (input) {
            input.focus();
            input.setSelectionRange(input.value.length, input.value.length);
        }
    }

    async function saveRule(rule, input, box) {
        const spec = input.value.trim();
        hideSpecError(box, input);
        const ok = await changeRules('/api/rules/' + encodeURIComponent(rule.id), 'PUT',
            { spec, enabled: !!rule.enabled }, (msg) => showSpecError(box, input, msg));
        if (ok) {
            rulesState.editing = null;
            renderRules();
            toast('Rule #' + rule.id + ' changed');
        }
    }

    async function toggleRule(rule, on) {
        await changeRules('/api/rules/' + encodeURIComponent(rule.id), 'PUT', { spec: rule.spec, enabled: on });
    }

    async function deleteRule(rule) {
        if (!window.confirm('Delete rule #' + rule.id + '?\n\n' + rule.spec))
            return;
        if (await changeRules('/api/rules/' + encodeURIComponent(rule.id), 'DELETE'))
            toast('Rule #' + rule.id + ' deleted');
    }

    async function moveRule(index, delta) {
        const ids = rulesState.rules.map((r) => Number(r.id));
        const to = index + delta;
        if (to < 0 || to >= ids.length)
            return;
        [ids[index], ids[to]] = [ids[to], ids[index]];
        await changeRules('/api/rules/reorder', 'POST', { ids });
    }

    function ruleRow(rule, index, count) {
        const id = Number(rule.id);
        const on = el('input', {
            type: 'checkbox', class: 'rule-enabled', 'aria-label': 'Rule #' + id + ' enabled',
            title: rule.enabled ? 'enabled: click to disable' : 'disabled: click to enable',
        });
        on.checked = !!rule.enabled;
        on.addEventListener('change', () => toggleRule(rule, on.checked));
        const specCell = el('td', { class: 'r-spec' });
        const actions = el('td', { class: 'r-actions' });
        if (rulesState.editing === id) {
            const input = el('input', {
                type: 'text', class: 'rule-edit mono', spellcheck: 'false', value: rule.spec,
                'aria-label': 'Rule #' + id,
            });
            const box = el('p', { class: 'rule-error', role: 'alert', hidden: true });
            input.addEventListener('keydown', (e) => {
                if (e.key === 'Enter') {
                    e.preventDefault();
                    saveRule(rule, input, box);
                } else if (e.key === 'Escape') {
                    e.preventDefault();
                    rulesState.editing = null;
                    renderRules();
                }
            });
            specCell.appendChild(input);
            specCell.appendChild(box);
            actions.appendChild(el('button', { type: 'button', class: 'rule-save', text: 'Save', onclick: () => saveRule(rule, input, box) }));
            actions.appendChild(el('button', {
                type: 'button', class: 'rule-cancel', text: 'Cancel',
                onclick: () => { rulesState.editing = null; renderRules(); },
            }));
        } else {
            specCell.appendChild(el('code', { class: 'rule-spec', text: rule.spec, title: 'double-click to edit' }));
            specCell.addEventListener('dblclick', () => editRule(id));
            actions.appendChild(el('button', { type: 'button', class: 'rule-edit-button', text: 'Edit', onclick: () => editRule(id) }));
        }
        actions.appendChild(el('button', {
            type: 'button', class: 'rule-up', text: '\u2191', 'aria-label': 'Move rule #' + id + ' up',
            title: 'apply earlier', disabled: index === 0, onclick: () => moveRule(index, -1),
        }));
        actions.appendChild(el('button', {
            type: 'button', class: 'rule-down', text: '\u2193', 'aria-label': 'Move rule #' + id + ' down',
            title: 'apply later', disabled: index === count - 1, onclick: () => moveRule(index, 1),
        }));
        actions.appendChild(el('button', {
            type: 'button', class: 'danger rule-delete', text: 'Delete', 'aria-label': 'Delete rule #' + id,
            onclick: () => deleteRule(rule),
        }));
        return el('tr', { 'data-rule-id': id, class: rule.enabled ? null : 'is-disabled' },
            el('td', { class: 'r-pos', text: String(index + 1) }),
            el('td', { class: 'r-label mono', text: rule.label || '#' + id, title: 'flows changed by this rule name it ' + (rule.label || '#' + id) }),
            el('td', { class: 'r-on' }, on),
            specCell,
            actions);
    }

    function renderRules() {
        const rows = $('rule-rows');
        const list = rulesState.rules;
        clear(rows);
        list.forEach((r, i) => rows.appendChild(ruleRow(r, i, list.length)));
        $('rules-table').hidden = list.length === 0;
        $('rules-empty').hidden = list.length > 0 || !rulesState.available;
        $('rules-off').hidden = rulesState.available;
        $('rule-add-spec').disabled = !rulesState.available;
        $('rule-add-button').disabled = !rulesState.available;
        const statics = $('static-rules');
        clear(statics);
        for (const line of rulesState.statics)
            statics.appendChild(el('li', null, el('code', { text: line })));
        statics.hidden = rulesState.statics.length === 0;
        $('static-empty').hidden = rulesState.statics.length > 0;
        updateRulesCount();
    }

    /* ---- wiring ---- */

    function wire() {
        const form = $('filters');
        let debounce = 0;
        form.addEventListener('submit', (e) => {
            e.preventDefault();
            clearTimeout(debounce);
            applyFilters(true);
        });
        form.addEventListener('input', (e) => {
            if (e.target.tagName !== 'INPUT')
                return;
            clearTimeout(debounce);
            debounce = setTimeout(() => applyFilters(false), FILTER_DEBOUNCE_MS);
        });
        form.addEventListener('change', (e) => {
            if (e.target.tagName === 'SELECT')
                applyFilters(false);
        });
        $('filters-reset').addEventListener('click', () => {
            form.reset();
            clearTimeout(debounce);
            applyFilters(false);
        });
        window.addEventListener('hashchange', () => {
            const h = readHash();
            if (h.view !== state.view)
                setView(h.view);
            if (!sameFilters(h.filters, state.filters)) {
                state.filters = h.filters;
                fillForm(h.filters);
                reload();
            }
            if (h.flow !== null && h.flow !== state.openId)
                openFlow(h.flow);
        });

        const tbody = $('flow-rows');
        tbody.addEventListener('click', (e) => {
            const tr = e.target.closest('tr');
            if (!tr || !tbody.contains(tr))
                return;
            const id = Number(tr.dataset.id);
            if (e.target.matches('input[type=checkbox]')) {
                toggleSelected(id, e.target.checked);
                return;
            }
            if (e.target.closest('.c-sel'))
                return;
            tr.focus({ preventScroll: true });
            openFlow(id);
        });
        tbody.addEventListener('focus', (e) => {
            if (e.target !== tbody)
                return;
            const id = state.cursor !== null && state.rows.has(state.cursor) ? state.cursor
                : (tbody.firstElementChild ? Number(tbody.firstElementChild.dataset.id) : null);
            if (id !== null)
                setCursor(id, true);
        });
        $('list-scroll').addEventListener('keydown', onListKey);
        $('select-all').addEventListener('change', (e) => {
            const on = e.target.checked;
            for (const id of rowIds())
                toggleSelected(id, on);
        });
        $('load-older').addEventListener('click', loadOlder);
        $('jump-newest').addEventListener('click', () => {
            $('list-scroll').scrollTop = 0;
            reload();
        });
        if ('IntersectionObserver' in window) {
            const io = new IntersectionObserver((entries) => {
                if (entries.some((en) => en.isIntersecting))
                    loadOlder();
            }, { root: $('list-scroll'), rootMargin: '200px' });
            io.observe($('load-older'));
        }

        $('clear-all').addEventListener('click', clearAll);
        $('export-all').addEventListener('click', () => exportHar(null));
        $('import-har').addEventListener('click', () => $('import-har-file').click());
        $('import-har-file').addEventListener('change', () => {
            const input = $('import-har-file');
            const file = input.files && input.files[0];
            input.value = '';
            if (file)
                importHar(file);
        });
        $('export-selected').addEventListener('click', () => {
            exportHar(Array.from(state.selected).sort((a, b) => b - a));
        });

        $('d-close').addEventListener('click', closeDetail);
        document.addEventListener('tapwire:open', (ev) => openFlow(ev.detail));
        $('d-curl').addEventListener('click', () => {
            if (state.openDetail && state.openDetail.curl)
                copyText(state.openDetail.curl);
        });
        $('d-har').addEventListener('click', () => {
            if (state.openId !== null)
                download('/api/flows/' + encodeURIComponent(state.openId) + '/har', 'flow-' + state.openId + '.har');
        });
        $('d-delete').addEventListener('click', deleteOpen);

        $('view-flows').addEventListener('click', () => setView('flows'));
        $('view-rules').addEventListener('click', () => setView('rules'));
        $('view-sql').addEventListener('click', () => setView('sql'));
        $('sql-form').addEventListener('submit', runSql);
        $('rule-add').addEventListener('submit', addRule);
        $('rule-add-spec').addEventListener('input', () => hideSpecError($('rule-add-error'), $('rule-add-spec')));
        $('detail').addEventListener('keydown', (e) => {
            if (e.key === 'Escape') {
                e.preventDefault();
                closeDetail();
            }
        });
        for (const t of TABS) {
            const tab = $('tab-' + t);
            tab.addEventListener('click', () => selectTab(t));
            tab.addEventListener('keydown', (e) => {
                const tabs = TABS.filter((name) => !$('tab-' + name).hidden);
                const i = tabs.indexOf(t);
                let j = -1;
                if (e.key === 'ArrowRight')
                    j = (i + 1) % tabs.length;
                else if (e.key === 'ArrowLeft')
                    j = (i + tabs.length - 1) % tabs.length;
                if (j >= 0) {
                    e.preventDefault();
                    selectTab(tabs[j]);
                    $('tab-' + tabs[j]).focus();
                }
            });
        }
    }

    function start() {
        wire();
        selectTab('response');
        const h = readHash();
        state.filters = h.filters;
        fillForm(h.filters);
        setView(h.view);
        if (h.view !== 'rules')
            loadRules(); /* for the count on the Rules button */
        if (!token())
            showAuthError(true);
        /* Events first, then the first page: flows written in between are
         * held in state.pending and merged by id. */
        connectEvents();
        reload();
        if (h.flow !== null)
            openFlow(h.flow);
    }

    if (document.readyState === 'loading')
        document.addEventListener('DOMContentLoaded', start);
    else
        start();
}());
