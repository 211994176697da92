/*
 * tapwire dashboard: working with traffic. The intercept filter, the flows
 * waiting in the intercept room (polled, at the top of the page) with an
 * editor for method, URL, headers and body and the resume / resume all /
 * drop buttons; Replay and "Edit and resend" on the open flow; a "New
 * request" composer. The API is dashinteract.h's.
 *
 * As in app.js: captured data reaches the DOM only through textContent and
 * form values, never as HTML; nothing inline.
 */
(function () {
    'use strict';

    const POLL_MS = 1000;
    const $ = (id) => document.getElementById(id);

    /* What the editor is for: {kind: 'resume', id, side} | {kind: 'replay', id} | {kind: 'compose'} */
    let editing = null;
    let waitingIds = null; /* null: redraw the list on the next poll */

    function token() {
        const meta = document.querySelector('meta[name="tapwire-token"]');
        return meta ? meta.getAttribute('content') || '' : '';
    }

    /* fetch() with the token; resolves to the JSON answer, throws Error(message). */
    async function call(method, path, body) {
        const headers = { 'X-Tapwire-Token': token() };
        const opts = { method, headers, credentials: 'same-origin', cache: 'no-store' };
        if (body !== undefined) {
            headers['Content-Type'] = 'application/json';
            opts.body = JSON.stringify(body);
        }
        const res = await fetch(path, opts);
        let j = null;
        try {
            j = await res.json();
        } catch (e) {
            /* not JSON */
        }
        if (!res.ok)
            throw new Error(j && typeof j.error === 'string' ? j.error : res.status + ' ' + res.statusText);
        return j;
    }

    function toast(text) {
        const t = $('toast');
        if (!t)
            return;
        t.textContent = text;
        t.hidden = false;
        setTimeout(() => { t.hidden = true; }, 2500);
    }

    /* ---- the filter ---- */

    async function loadFilter() {
        try {
            const j = await call('GET', '/api/intercept');
            $('intercept-filter').value = j.filter || '';
        } catch (e) {
            $('intercept-bar').hidden = true; /* intercept is off in this tapwire */
        }
    }

    async function setFilter(ev) {
        ev.preventDefault();
        const err = $('intercept-error');
        err.hidden = true;
        try {
            const j = await call('PUT', '/api/intercept', { filter: $('intercept-filter').value });
            toast(j.filter ? 'Intercepting: ' + j.filter : 'Intercept off');
        } catch (e) {
            err.textContent = e.message;
            err.hidden = false;
        }
    }

    /* ---- the waiting flows ---- */

    function headersText(pairs) {
        return (pairs || []).map((p) => p[0] + ': ' + p[1]).join('\n');
    }

    /* "Name: value" lines back into [[name, value], ...]; blank lines skipped. */
    function headersFrom(text) {
        const out = [];
        for (const line of text.split('\n')) {
            const l = line.replace(/\r$/, '');
            if (l.trim() === '')
                continue;
            const i = l.indexOf(':');
            if (i <= 0)
                throw new Error('not a header line: ' + l);
            out.push([l.slice(0, i).trim(), l.slice(i + 1).trim()]);
        }
        return out;
    }

    function renderWaiting(flows) {
        const box = $('waiting');
        const list = $('waiting-list');
        const ids = flows.map((f) => f.id).join(',');
        box.hidden = flows.length === 0;
        $('waiting-count').textContent = flows.length + (flows.length === 1 ? ' flow waits' : ' flows wait');
        if (ids === waitingIds)
            return;
        waitingIds = ids;
        list.replaceChildren();
        for (const f of flows) {
            const li = document.createElement('li');
            li.className = 'waiting-item';
            const what = document.createElement('span');
            what.className = 'mono';
            what.textContent = (f.side === 'response' ? '\u2190 ' + f.status + ' ' : '\u2192 ') + f.method + ' ' + f.url;
            const left = document.createElement('span');
            left.className = 'muted';
            left.textContent = ' until ' + new Date(f.deadline).toLocaleTimeString();
            const edit = document.createElement('button');
            edit.type = 'button';
            edit.textContent = 'Edit';
            edit.addEventListener('click', () => openEditor({ kind: 'resume', id: f.id, side: f.side }, f));
            const resume = document.createElement('button');
            resume.type = 'button';
            resume.textContent = 'Resume';
            resume.addEventListener('click', () => act('/api/flows/' + f.id + '/resume'));
            const drop = document.createElement('button');
            drop.type = 'button';
            drop.className = 'danger';
            drop.textContent = 'Drop';
            drop.addEventListener('click', () => act('/api/flows/' + f.id + '/drop'));
            li.append(what, left, edit, resume, drop);
            list.append(li);
        }
        /* The flow in the editor went on (resumed elsewhere, timed out, hung up). */
        if (editing && editing.kind === 'resume' && !flows.some((f) => f.id === editing.id))
            closeEditor();
    }

    async function poll() {
        try {
            const j = await call('GET', '/api/intercepted');
            renderWaiting(j.flows || []);
        } catch (e) {
            /* the next poll tries again */
        }
        setTimeout(poll, POLL_MS);
    }

    async function act(path, body) {
        try {
            await call('POST', path, body);
            waitingIds = null;
            const j = await call('GET', '/api/intercepted');
            renderWaiting(j.flows || []);
        } catch (e) {
            toast(e.message);
        }
    }

    /* ---- the editor (resume, replay, compose) ---- */

    function openEditor(what, f) {
        editing = what;
        const isResponse = what.side === 'response';
        $('editor-title').textContent = what.kind === 'resume'
            ? (isResponse ? 'Edit the waiting response' : 'Edit the waiting request')
            : what.kind === 'replay' ? 'Edit and resend flow ' + what.id : 'New request';
        $('editor-method').value = f.method || 'GET';
        $('editor-method').disabled = isResponse;
        $('editor-url').value = f.url || 'https://';
        $('editor-url').disabled = isResponse;
        $('editor-status').value = isResponse ? String(f.status) : '';
        $('editor-status').closest('label').hidden = !isResponse;
        $('editor-headers').value = headersText(f.headers);
        const held = f.body_held !== false;
        $('editor-body').value = f.body || '';
        $('editor-body').disabled = !held;
        /* A resumed flow's body goes back only when it was changed: the
         * same text is no edit, and a compressed response then goes on as
         * it came. */
        editing.shownBody = $('editor-body').value;
        $('editor-note').textContent = !held
            ? (isResponse ? 'This response\u2019s body was not held (none, larger than 1 MiB, or not decodable): it goes on as it comes; its head can be edited.'
                : 'This body was not held (none, chunked on HTTP/1.1, or larger than 1 MiB): it goes on as it comes.')
            : f.body_is_text === false ? 'The body is not text: bytes that are not UTF-8 are shown replaced and would be sent so.' : '';
        $('editor-send').textContent = what.kind === 'resume' ? 'Resume' : 'Send';
        $('editor-drop').hidden = what.kind !== 'resume';
        $('editor-error').hidden = true;
        $('editor').hidden = false;
        $('editor-url').focus();
    }

    function closeEditor() {
        editing = null;
        $('editor').hidden = true;
    }

    async function send(ev) {
        ev.preventDefault();
        if (!editing)
            return;
        const err = $('editor-error');
        err.hidden = true;
        const body = {};
        try {
            body.headers = headersFrom($('editor-headers').value);
        } catch (e) {
            err.textContent = e.message;
            err.hidden = false;
            return;
        }
        if (editing.side === 'response') {
            body.status = Number($('editor-status').value);
        } else {
            body.method = $('editor-method').value.trim();
            body.url = $('editor-url').value.trim();
        }
        if (!$('editor-body').disabled &&
            (editing.kind !== 'resume' || $('editor-body').value !== editing.shownBody))
            body.body = $('editor-body').value;
        const what = editing;
        try {
            if (what.kind === 'resume') {
                await call('POST', '/api/flows/' + what.id + '/resume', body);
                closeEditor();
                waitingIds = null;
                return;
            }
            const path = what.kind === 'replay' ? '/api/flows/' + what.id + '/replay' : '/api/replay';
            const j = await call('POST', path, body);
            closeEditor();
            toast('Sent as flow ' + j.id);
            if (j.id)
                document.dispatchEvent(new CustomEvent('tapwire:open', { detail: j.id }));
        } catch (e) {
            err.textContent = e.message;
            err.hidden = false;
        }
    }

    /* ---- the open flow ---- */

    let openFlow = null;

    function urlOf(d) {
        const isDefault = d.port === (d.scheme === 'https' ? 443 : 80);
        const host = d.host.indexOf(':') >= 0 ? '[' + d.host + ']' : d.host;
        return d.scheme + '://' + host + (isDefault ? '' : ':' + d.port) + (d.path || '/');
    }

    /* The open flow's request in the editor's shape. */
    function requestOf(d) {
        const body = d.request && d.request.body;
        return {
            method: d.method,
            url: urlOf(d),
            headers: d.request ? d.request.headers : [],
            body: '',
            body_held: true,
            body_is_text: true,
            hasBody: body && body.size > 0,
            truncated: body && body.truncated,
        };
    }

    async function replayOpen() {
        if (!openFlow)
            return;
        try {
            const j = await call('POST', '/api/flows/' + openFlow.id + '/replay');
            toast('Replayed as flow ' + j.id);
            if (j.id)
                document.dispatchEvent(new CustomEvent('tapwire:open', { detail: j.id }));
        } catch (e) {
            toast(e.message);
        }
    }

    async function resendOpen() {
        if (!openFlow)
            return;
        const f = requestOf(openFlow);
        if (f.hasBody) {
            try {
                const res = await fetch('/api/flows/' + openFlow.id + '/request/body',
                    { headers: { 'X-Tapwire-Token': token() }, credentials: 'same-origin' });
                if (res.ok)
                    f.body = await res.text();
            } catch (e) {
                /* an empty body to fill in */
            }
        }
        openEditor({ kind: 'replay', id: openFlow.id }, f);
        if (f.truncated)
            $('editor-note').textContent = 'The stored body was cut at the capture limit: give the whole body, or the replay is refused.';
    }

    document.addEventListener('DOMContentLoaded', () => {
        if (!$('intercept-bar'))
            return;
        $('intercept-form').addEventListener('submit', setFilter);
        $('resume-all').addEventListener('click', () => act('/api/intercepted/resume-all'));
        $('editor').addEventListener('submit', send);
        $('editor-cancel').addEventListener('click', closeEditor);
        $('editor-drop').addEventListener('click', () => {
            if (editing && editing.kind === 'resume') {
                act('/api/flows/' + editing.id + '/drop');
                closeEditor();
            }
        });
        $('compose-open').addEventListener('click', () =>
            openEditor({ kind: 'compose' }, { method: 'GET', url: 'https://', headers: [], body: '' }));
        $('d-replay').addEventListener('click', replayOpen);
        $('d-resend').addEventListener('click', resendOpen);
        document.addEventListener('tapwire:detail', (ev) => {
            openFlow = ev.detail;
            const canReplay = openFlow && openFlow.kind !== 'tunnel' && openFlow.method !== 'CONNECT';
            $('d-replay').disabled = !canReplay;
            $('d-resend').disabled = !canReplay;
        });
        loadFilter();
        poll();
    });
})();
