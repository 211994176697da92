/*
 * Drives the dashboard's intercept and replay in headless Chromium for
 * test_intercept_browser.sh, which starts tapwire, the plain HTTP test
 * origin and Chromium (and kills them); this script connects over CDP and
 * opens two contexts: the dashboard (no proxy) and a proxied one (tapwire as
 * its proxy, loopback included).
 *
 * A person's way through it: set the intercept filter in the page; load a
 * page in the proxied context, which waits; open the waiting request in
 * the dashboard's editor, change its User-Agent and add a header, Resume;
 * the page that loads shows the edited head (the origin's /headers echoes
 * the request it got). A response held the same way gets a new body in the
 * editor, which the page then shows. Then, with the filter off, the flow's detail view's
 * Replay button adds a new flow that names its source. One line per check
 * to $RESULTS ("PASS<TAB>name" or "FAIL<TAB>name<TAB>detail"); every wait
 * is bounded by WAIT_MS.
 *
 * Environment: CDP_URL, DASHBOARD_URL (with ?token=), PROXY_SERVER, ORIGIN
 * (http://127.0.0.1:PORT), MARKER (unique text), RESULTS, SCREENSHOT,
 * WAIT_MS (default 10000).
 */
import { chromium } from 'playwright-core';
import { WAIT_MS, assert, check, env, record, startResults, until } from './harness.mjs';

const CDP_URL = env('CDP_URL');
const DASHBOARD_URL = env('DASHBOARD_URL');
const PROXY_SERVER = env('PROXY_SERVER');
const ORIGIN = env('ORIGIN');
const MARKER = env('MARKER');
const RESULTS = env('RESULTS');
const SCREENSHOT = env('SCREENSHOT');

const TOKEN = new URL(DASHBOARD_URL).searchParams.get('token') || '';
const DASH_ORIGIN = new URL(DASHBOARD_URL).origin;
const PAGE_PATH = `/headers?ic=${MARKER}`;
const EDITED_AGENT = `edited-agent-${MARKER}`;

startResults(RESULTS);

/* The dashboard's API, from this script (not the page): what the page did. */
async function api(path) {
    const res = await fetch(DASH_ORIGIN + path, { headers: { 'X-Tapwire-Token': TOKEN } });
    assert(res.ok, `${path}: ${res.status}`);
    return res.json();
}

let browser;
try {
    browser = await chromium.connectOverCDP(CDP_URL, { timeout: WAIT_MS });
} catch (e) {
    record(false, 'connect to Chromium over CDP', e.message);
    process.exit(0);
}

async function finish() {
    try {
        const cdp = await browser.newBrowserCDPSession();
        await cdp.send('Browser.close');
    } catch (e) {
        /* the connection drops as Chromium exits */
    }
    await browser.close().catch(() => {});
    process.exit(0);
}

const dash = await browser.newContext({ viewport: { width: 1400, height: 900 } });
const page = await dash.newPage();
page.setDefaultTimeout(WAIT_MS);
const pageErrors = [];
page.on('pageerror', (e) => pageErrors.push(e.message));

const opened = await check('the dashboard opens with its intercept bar', async () => {
    const res = await page.goto(DASHBOARD_URL, { waitUntil: 'load', timeout: WAIT_MS });
    assert(res && res.status() === 200, `status ${res && res.status()}`);
    await page.locator('#intercept-filter').waitFor({ state: 'visible' });
    await page.locator('#flows thead').waitFor();
});
if (!opened)
    await finish();

const filterSet = await check('the intercept filter is set in the page', async () => {
    await page.locator('#intercept-filter').fill(`~u ic=${MARKER}`);
    await page.locator('#intercept-form button[type="submit"]').click();
    await until('GET /api/intercept says the filter', async () =>
        (await api('/api/intercept')).filter === `~u ic=${MARKER}`);
    assert(await page.locator('#intercept-error').isHidden(),
        `error: ${await page.locator('#intercept-error').textContent()}`);
});

const proxied = await browser.newContext({ proxy: { server: PROXY_SERVER, bypass: '<-loopback>' } });
const p2 = await proxied.newPage();
p2.setDefaultTimeout(WAIT_MS);

let loading = null;
const waits = filterSet && await check('a page load through tapwire waits, listed at the top of the dashboard', async () => {
    loading = p2.goto(ORIGIN + PAGE_PATH, { timeout: 4 * WAIT_MS }).then(
        (res) => ({ res }), (err) => ({ err }));
    const item = page.locator('#waiting-list li').filter({ hasText: PAGE_PATH });
    await item.first().waitFor({ timeout: WAIT_MS });
    assert(await page.locator('#waiting').isVisible(), 'the waiting box is hidden');
    /* Still waiting: the origin has not answered the page. */
    const settled = await Promise.race([loading.then(() => true),
        new Promise((r) => setTimeout(() => r(false), 300))]);
    assert(!settled, 'the page loaded while its request was listed as waiting');
});

const resumed = waits && await check('the header is edited in the editor and the request resumed', async () => {
    const item = page.locator('#waiting-list li').filter({ hasText: PAGE_PATH }).first();
    await item.locator('button', { hasText: 'Edit' }).click();
    await page.locator('#editor').waitFor({ state: 'visible' });
    const title = await page.locator('#editor-title').textContent();
    assert(/request/i.test(title), `editor title: ${title}`);
    const headers = await page.locator('#editor-headers').inputValue();
    assert(/^User-Agent: /m.test(headers), `no User-Agent line: ${headers.slice(0, 300)}`);
    const edited = headers.replace(/^User-Agent: .*$/m, `User-Agent: ${EDITED_AGENT}`) +
        `\nX-Intercepted: ${MARKER}`;
    await page.locator('#editor-headers').fill(edited);
    await page.locator('#editor-send').click();
    await page.locator('#editor').waitFor({ state: 'hidden' });
    await until('the waiting list empties', async () =>
        (await page.locator('#waiting-list li').filter({ hasText: PAGE_PATH }).count()) === 0);
});

resumed && await check('the page shows the effect of the edit', async () => {
    const got = await loading;
    assert(!got.err, `the page load failed: ${got.err && got.err.message}`);
    assert(got.res.status() === 200, `status ${got.res.status()}`);
    const text = await p2.locator('body').textContent();
    assert(text.includes(`User-Agent: ${EDITED_AGENT}`), `page: ${text.slice(0, 400)}`);
    assert(text.includes(`X-Intercepted: ${MARKER}`), `page: ${text.slice(0, 400)}`);
    assert(!/User-Agent: Mozilla/.test(text), `the original User-Agent reached the origin: ${text.slice(0, 400)}`);
});

const RESP_PATH = `/headers?icresp=${MARKER}`;
resumed && await check('a held response\'s body is edited in the editor and the page shows it', async () => {
    await page.locator('#intercept-filter').fill(`~s & ~u icresp=${MARKER}`);
    await page.locator('#intercept-form button[type="submit"]').click();
    await until('GET /api/intercept says the response filter', async () =>
        (await api('/api/intercept')).filter === `~s & ~u icresp=${MARKER}`);
    const load = p2.goto(ORIGIN + RESP_PATH, { timeout: 4 * WAIT_MS }).then(
        (res) => ({ res }), (err) => ({ err }));
    const item = page.locator('#waiting-list li').filter({ hasText: RESP_PATH }).first();
    await item.waitFor({ timeout: WAIT_MS });
    await item.locator('button', { hasText: 'Edit' }).click();
    await page.locator('#editor').waitFor({ state: 'visible' });
    const title = await page.locator('#editor-title').textContent();
    assert(/response/i.test(title), `editor title: ${title}`);
    assert(!(await page.locator('#editor-body').isDisabled()), 'the response body cannot be edited');
    const shown = await page.locator('#editor-body').inputValue();
    assert(shown.includes(`GET ${RESP_PATH} HTTP/1.1`), `body shown: ${shown.slice(0, 300)}`);
    await page.locator('#editor-body').fill(`edited response ${MARKER}`);
    await page.locator('#editor-send').click();
    const got = await load;
    assert(!got.err, `the page load failed: ${got.err && got.err.message}`);
    const text = (await p2.locator('body').textContent()).trim();
    assert(text === `edited response ${MARKER}`, `page: ${text.slice(0, 300)}`);
});

await check('the filter is turned off in the page', async () => {
    await page.locator('#intercept-filter').fill('');
    await page.locator('#intercept-form button[type="submit"]').click();
    await until('GET /api/intercept says off', async () => (await api('/api/intercept')).filter === '');
});

const row = (path) => page.locator('#flow-rows tr').filter({
    has: page.locator(`td.c-path:text-is(${JSON.stringify(path)})`),
});

let sourceId = null;
const detail = resumed && await check('the intercepted flow is listed and its detail opens', async () => {
    await row(PAGE_PATH).first().waitFor({ timeout: WAIT_MS });
    sourceId = Number(await row(PAGE_PATH).first().getAttribute('data-id'));
    await row(PAGE_PATH).first().locator('td.c-path').click();
    await page.locator('#detail').waitFor({ state: 'visible' });
    await until('the Replay button enabled', async () => !(await page.locator('#d-replay').isDisabled()));
    const f = await api(`/api/flows/${sourceId}`);
    assert(/intercept/.test(f.rules || ''), `the flow is not marked as changed by the intercept: ${f.rules}`);
});

detail && await check('Replay in the detail view adds a flow, replay of the open one', async () => {
    const before = await page.locator('#flow-rows tr').count();
    await page.locator('#d-replay').click();
    const newId = await until('a new flow that names its source', async () => {
        const list = await api('/api/flows?limit=5');
        for (const f of list.flows) {
            if (f.id === sourceId)
                continue;
            const d = await api(`/api/flows/${f.id}`);
            if (d.replay_of === sourceId)
                return f.id;
        }
        return 0;
    });
    await until('the new flow in the open list', async () =>
        (await page.locator(`#flow-rows tr[data-id="${newId}"]`).count()) === 1 &&
        (await page.locator('#flow-rows tr').count()) > before);
    const body = await (await fetch(`${DASH_ORIGIN}/api/flows/${newId}/response/body`,
        { headers: { 'X-Tapwire-Token': TOKEN } })).text();
    assert(body.includes(`User-Agent: ${EDITED_AGENT}`),
        `the replay did not send the request as it was sent on: ${body.slice(0, 300)}`);
});

await check('no script errors in the dashboard', async () => {
    assert(pageErrors.length === 0, pageErrors.join(' | '));
});

try {
    await page.screenshot({ path: SCREENSHOT });
    console.log(`# screenshot: ${SCREENSHOT}`);
} catch (e) {
    console.log(`# screenshot failed: ${e.message}`);
}
await finish();
