/*
 * Drives the dashboard in headless Chromium for test_dashboard_browser.sh.
 *
 * The shell test starts tapwire, the TLS origin and Chromium (it owns and
 * kills every process); this script only connects to that Chromium over CDP
 * and opens two browser contexts in it:
 *  - "dashboard": no proxy. The dashboard is opened directly, never through
 *    tapwire (the proxy refuses to proxy its own dashboard);
 *  - "proxied": Playwright's per-context proxy (CDP createBrowserContext with
 *    proxyServer), bypass list "<-loopback>" so that 127.0.0.1 goes through
 *    the proxy too; Chromium otherwise sends loopback directly.
 * It writes one line per check to $RESULTS ("PASS<TAB>name" or
 * "FAIL<TAB>name<TAB>detail"); the shell turns them into its own checks.
 * Every wait is bounded by WAIT_MS.
 *
 * After the flow list and detail, the Rules view: a bad rule shows the
 * parser's message, a good one is added through the page, and the next page
 * the proxied context loads must come back rewritten, marked in the list,
 * with the original beside the sent body under Changes.
 *
 * Environment: CDP_URL, DASHBOARD_URL (with ?token=), PROXY_SERVER, ORIGIN
 * (https://127.0.0.1:PORT), MARKER (unique text), SCREENSHOT,
 * SCREENSHOT_RULES (the Rules view), SCREENSHOT_CHANGES (optional: the
 * Changes tab of the rewritten flow), STATIC_RULE (a --rule tapwire was
 * started with, as the page should list it), RESULTS, WAIT_MS (default 10000).
 */
import { createServer } from 'node:http';
import { chromium } from 'playwright-core';
import { WAIT_MS, assert, check, env, failures, record, startResults, until } from './harness.mjs';

const CDP_URL = env('CDP_URL');
const DASHBOARD_URL = env('DASHBOARD_URL');
const PROXY_SERVER = env('PROXY_SERVER');
const ORIGIN = env('ORIGIN');
const MARKER = env('MARKER');
const SCREENSHOT = env('SCREENSHOT');
const SCREENSHOT_RULES = env('SCREENSHOT_RULES');
const SCREENSHOT_CHANGES = env('SCREENSHOT_CHANGES', '');
const STATIC_RULE = env('STATIC_RULE');
const RESULTS = env('RESULTS');

const TOKEN = new URL(DASHBOARD_URL).searchParams.get('token') || '';
const DASH_ORIGIN = new URL(DASHBOARD_URL).origin;
/* Cookies ignore ports: the name carries the dashboard's. */
const COOKIE_NAME = `tapwire_token_${new URL(DASHBOARD_URL).port}`;
const HEADERS_PATH = `/headers?marker=${MARKER}`;
const ECHO_PATH = `/echo?marker=${MARKER}`;
const CONN_PATH = `/conn?marker=${MARKER}`;
/* The rule added through the page, and the form the API stores it in. */
const RULE = 'response body "conn=" "CONN="';
const RULE_CANONICAL = "response body 'conn=' 'CONN='";
const BAD_RULE = 'response body "conn=';
/* Written by hand, not by JSON.stringify: the number has more digits than a
 * double holds, and the page must show it exactly as it came. */
const ECHO_JSON = `{"marker":"${MARKER}","big":12345678901234567890,"list":[1,2,{"deep":true}]}`;

startResults(RESULTS);

let browser;
try {
    browser = await chromium.connectOverCDP(CDP_URL, { timeout: WAIT_MS });
} catch (e) {
    record(false, 'connect to Chromium over CDP', e.message);
    process.exit(0);
}

const dash = await browser.newContext({ viewport: { width: 1400, height: 900 } });
/* Runs before the page's own script (and is not subject to its CSP): every
 * CSP violation the page causes is collected here. */
await dash.addInitScript(() => {
    window.__cspViolations = [];
    document.addEventListener('securitypolicyviolation', (e) => {
        window.__cspViolations.push(`${e.violatedDirective} blocked ${e.blockedURI || '(inline)'}`);
    });
});
const page = await dash.newPage();
page.setDefaultTimeout(WAIT_MS);
const consoleErrors = [];
const pageErrors = [];
const apiRequests = [];
let navigations = 0;
page.on('console', (m) => {
    if (m.type() === 'error')
        consoleErrors.push(m.text());
});
page.on('pageerror', (e) => pageErrors.push(e.message));
page.on('request', (r) => {
    const u = new URL(r.url());
    if (u.pathname.startsWith('/api/'))
        apiRequests.push(r);
});
page.on('framenavigated', (f) => {
    if (f === page.mainFrame())
        navigations++;
});

async function screenshot(path = SCREENSHOT) {
    try {
        await page.screenshot({ path });
        console.log(`# screenshot: ${path}`);
    } catch (e) {
        console.log(`# screenshot failed: ${e.message}`);
    }
}

/* Asks Chromium to quit, so it reaps its own helper processes; the shell
 * still holds its PID and kills it if it does not. */
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

/* (a) the dashboard, opened with the token from tapwire's startup line */
const opened = await check('dashboard opens with ?token=, sets the cookie and lands on / without the token', async () => {
    const res = await page.goto(DASHBOARD_URL, { waitUntil: 'load', timeout: WAIT_MS });
    assert(res && res.status() === 200, `status ${res && res.status()} for ${page.url()}`);
    const u = new URL(page.url());
    assert(u.pathname === '/' && !u.search.includes('token'), `landed on ${page.url()}`);
    const cookies = await dash.cookies();
    const c = cookies.find((k) => k.name === COOKIE_NAME);
    assert(c && c.value === TOKEN, `cookie ${COOKIE_NAME}: ${JSON.stringify(cookies)}`);
    assert(c.httpOnly && c.sameSite === 'Strict', `cookie not HttpOnly, SameSite=Strict: ${JSON.stringify(c)}`);
});

/* (a2) A page served from any other port of this host shares the cookie jar
 * (cookies ignore ports): its script must get the token neither from
 * document.cookie nor by fetching the dashboard's page with the cookie. */
await check('a page on another local port cannot get the token', async () => {
    const server = createServer((req, res) => {
        res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
        res.end('<!doctype html><title>another local site</title><p>another local site</p>');
    });
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
    const other = await dash.newPage();
    try {
        await other.goto(`http://127.0.0.1:${server.address().port}/`, { timeout: WAIT_MS });
        const jar = await other.evaluate(() => document.cookie);
        assert(!jar.includes(TOKEN), `document.cookie on another port shows the token: ${jar}`);
        const got = await other.evaluate(async (url) => {
            try {
                const res = await fetch(url, { credentials: 'include' });
                return `read ${res.status}: ${await res.text()}`;
            } catch (e) {
                return `blocked: ${e.message}`;
            }
        }, DASH_ORIGIN + '/');
        assert(!got.includes(TOKEN), `another port read the dashboard page with the token: ${got.slice(0, 200)}`);
        assert(got.startsWith('blocked'), `another port read the dashboard page: ${got.slice(0, 200)}`);
    } finally {
        await other.close();
        server.close();
    }
});
if (!opened) {
    await screenshot();
    await finish();
}

const live = await check('the flow table renders and the live event stream connects', async () => {
    await page.locator('#flows thead').waitFor({ timeout: WAIT_MS });
    await page.locator('#live.on').waitFor({ timeout: WAIT_MS });
    assert(await page.locator('#auth-error').isHidden(), 'the not-authorised banner is shown');
    assert(await page.locator('#notice').isHidden(), `notice: ${await page.locator('#notice').textContent()}`);
});
if (!live) {
    await screenshot();
    await finish();
}
const navigationsBefore = navigations;

/* (b) real traffic through tapwire from a second, proxied context */
const proxied = await browser.newContext({ proxy: { server: PROXY_SERVER, bypass: '<-loopback>' } });
const p2 = await proxied.newPage();
p2.setDefaultTimeout(WAIT_MS);
const originPort = new URL(ORIGIN).port;

const browsed = await check('the proxied browser loads the https origin through tapwire (CA trusted)', async () => {
    const res = await p2.goto(ORIGIN + HEADERS_PATH, { timeout: WAIT_MS });
    assert(res.status() === 200, `status ${res.status()}`);
    const text = await p2.locator('body').textContent();
    assert(text.includes(`GET ${HEADERS_PATH} HTTP/1.1`), `body: ${text.slice(0, 200)}`);
    const sec = await res.securityDetails();
    /* tapwire's leaf, not the origin's: the exchange was intercepted */
    assert(sec && /tapwire/i.test(sec.issuer || ''), `certificate issuer: ${sec && sec.issuer}`);
});

await check('a JSON POST goes through tapwire', async () => {
    const got = await p2.evaluate(async ([path, body]) => {
        const r = await fetch(path, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body });
        return `${r.status} ${await r.text()}`;
    }, [ECHO_PATH, ECHO_JSON]);
    assert(got === `200 ${ECHO_JSON}`, `got: ${got.slice(0, 200)}`);
});

/* (c) the flow shows up in the already open dashboard, live */
const row = (path) => page.locator('#flow-rows tr').filter({
    has: page.locator(`td.c-path:text-is(${JSON.stringify(path)})`),
});
const appeared = browsed && await check(`the flow appears in the open dashboard within ${WAIT_MS} ms, without a reload`, async () => {
    await row(HEADERS_PATH).first().waitFor({ timeout: WAIT_MS });
    const r = row(HEADERS_PATH).first();
    const cells = {
        host: (await r.locator('td.c-host').textContent()).trim(),
        method: (await r.locator('td.c-method').textContent()).trim(),
        status: (await r.locator('td.c-status').textContent()).trim(),
        tls: await r.locator('td.c-marks .icon-lock').count(),
    };
    assert(cells.host === '127.0.0.1' && cells.method === 'GET' && cells.status === '200' && cells.tls === 1,
        `row: ${JSON.stringify(cells)}`);
    assert(navigations === navigationsBefore, `the dashboard navigated ${navigations - navigationsBefore} time(s)`);
});

/* (d) its detail shows the response body as text */
if (appeared) {
    await check('clicking the row shows the decoded response body text and the headers', async () => {
        await row(HEADERS_PATH).first().locator('td.c-path').click();
        await page.locator('#detail').waitFor({ state: 'visible' });
        const body = page.locator('#panel-response pre.body-text');
        await until('response body text', async () => {
            const t = await body.textContent({ timeout: 1000 });
            return t.includes(`GET ${HEADERS_PATH} HTTP/1.1`) && t.includes(`Host: 127.0.0.1:${originPort}`);
        });
        const reqHeaders = await page.locator('#panel-request table.headers').textContent();
        assert(/Host\s*127\.0\.0\.1/.test(reqHeaders), `request headers: ${reqHeaders.slice(0, 200)}`);
        const resHeaders = await page.locator('#panel-response table.headers').textContent();
        assert(/Content-Type\s*text\/plain/i.test(resHeaders), `response headers: ${resHeaders.slice(0, 200)}`);
    });

    await check('the TLS tab shows both sides and a verified upstream', async () => {
        await page.locator('#tab-tls').click();
        const tls = page.locator('#panel-tls');
        await tls.locator('.verify-ok').waitFor({ timeout: WAIT_MS });
        const t = await tls.textContent();
        assert(/TLSv1\.[23]/.test(t), `TLS panel: ${t.slice(0, 300)}`);
    });

    await check('the timing tab shows a waterfall with a total', async () => {
        await page.locator('#tab-timing').click();
        await page.locator('#panel-timing table.timings tr.wf-total').waitFor({ timeout: WAIT_MS });
        const total = await page.locator('#panel-timing tr.wf-total td.num').textContent();
        assert(/\d/.test(total), `total: ${total}`);
        await page.locator('#tab-response').click();
    });

    /* (e) what a person would see */
    await screenshot();

    await check('a JSON body is pretty-printed, numbers exactly as sent', async () => {
        await row(ECHO_PATH).first().waitFor({ timeout: WAIT_MS });
        await row(ECHO_PATH).first().locator('td.c-path').click();
        const pre = page.locator('#panel-response pre.body-json');
        await until('pretty JSON', async () => {
            const t = await pre.textContent({ timeout: 1000 });
            return t.includes(`\n  "marker": "${MARKER}",\n`) && t.includes('"big": 12345678901234567890');
        });
    });

    await check('keyboard: Home selects the newest row, Down moves, Enter opens it', async () => {
        await page.locator('#flow-rows').focus();
        await page.keyboard.press('Home');
        await page.keyboard.press('ArrowDown');
        const second = await page.locator('#flow-rows tr').nth(1).getAttribute('data-id');
        assert(await page.locator('#flow-rows tr.cursor').getAttribute('data-id') === second, 'cursor not on row 2');
        await page.keyboard.press('Enter');
        await until('detail of the selected row', async () => new URL(page.url()).hash.includes(`flow=${second}`));
    });

    /* (f) the body search finds a word the detail view shows, also when the
     * page came gzip'd, and in any case by default */
    await check('a body search finds a word in a gzip\'d page, whatever its case', async () => {
        const res = await p2.goto(ORIGIN + '/compressed/gzip', { timeout: WAIT_MS });
        assert(res.status() === 200, `status ${res.status()}`);
        await row('/compressed/gzip').first().waitFor({ timeout: WAIT_MS });
        const form = page.locator('#filters');
        await form.locator('input[name="body"]').fill('example DOMAIN: this page is SERVED compressed');
        await form.locator('button[type="submit"]').click();
        await until('only the gzip\'d page listed', async () => {
            const paths = await page.locator('#flow-rows td.c-path').allTextContents();
            return paths.length >= 1 && paths.every((t) => t.trim() === '/compressed/gzip');
        });
        await form.locator('select[name="bodycase"]').selectOption('exact');
        await form.locator('button[type="submit"]').click();
        await until('nothing listed when the case must match', async () =>
            (await page.locator('#flow-rows td.c-path').count()) === 0);
        await until('the empty list says how the filters were read', async () => {
            const t = await page.locator('#list-empty').textContent();
            return /No flows match these filters: bodies containing .*\(case must match\)/.test(t) &&
                await page.locator('#list-empty').isVisible();
        });
        await page.locator('#filters-reset').click();
        await until('the list back without filters', async () =>
            (await row(HEADERS_PATH).count()) > 0);
    });
} else {
    await screenshot();
}

/* (g) rewrite rules made in the page act on the next request */
const rulesOpen = await check('the Rules view opens from the header, with an example in the input', async () => {
    await page.locator('#view-rules').click();
    await page.locator('#rules-view').waitFor({ state: 'visible' });
    assert(await page.locator('#split').isHidden(), 'the flow list is still shown');
    assert(new URL(page.url()).hash.includes('view=rules'), `hash: ${new URL(page.url()).hash}`);
    const placeholder = await page.locator('#rule-add-spec').getAttribute('placeholder');
    assert(placeholder.includes('"q=SEED+Labs"'), `placeholder: ${placeholder}`);
});

/* Everything after this needs the rulebook in the dashboard: without it
 * this one check fails and says why, and the rest does not run. */
const rulesOn = rulesOpen && await check('rules can be made in this tapwire (the rulebook is wired to the dashboard)', async () => {
    await until('GET /api/rules answered', async () =>
        (await page.locator('#rules-off').isVisible()) || (await page.locator('#rules-empty').isVisible()) ||
        (await page.locator('#rules-table').isVisible()));
    assert(await page.locator('#rules-off').isHidden(),
        'the page says "rewrite rules are off": main.c does not pass the rulebook in dashboard_options.rules');
});

let ruleAdded = false;
if (rulesOn) {
    await check('the --rule rules are listed read-only', async () => {
        await until('the static rule listed', async () =>
            (await page.locator('#static-rules li').allTextContents()).some((t) => t.includes(STATIC_RULE)));
        assert(await page.locator('#static-rules button, #static-rules input').count() === 0,
            'the static rules have controls');
    });

    await check('a rule that does not parse shows the parser\'s message with its column next to the input', async () => {
        await page.locator('#rule-add-spec').fill(BAD_RULE);
        await page.locator('#rule-add-button').click();
        const err = page.locator('#rule-add-error');
        await err.waitFor({ state: 'visible' });
        const text = await err.textContent();
        assert(/column \d+/.test(text), `error: ${text}`);
        assert(await page.locator('#rule-add-spec').getAttribute('aria-invalid') === 'true', 'input not marked invalid');
        assert(await page.locator('#rule-rows tr').count() === 0, 'a bad rule was listed');
    });

    ruleAdded = await check('a rule added through the page is listed, enabled, in canonical form', async () => {
        await page.locator('#rule-add-spec').fill(RULE);
        await page.locator('#rule-add-button').click();
        const added = page.locator('#rule-rows tr').first();
        await until('the new rule row', async () =>
            (await added.locator('code.rule-spec').textContent({ timeout: 1000 })) === RULE_CANONICAL);
        assert(await added.locator('input.rule-enabled').isChecked(), 'the rule is not enabled');
        assert(await page.locator('#rule-add-error').isHidden(), 'the error is still shown');
        assert(await page.locator('#rule-add-spec').inputValue() === '', 'the input was not cleared');
        assert(/\d/.test(await page.locator('#rules-count').textContent()), 'no count on the Rules button');
    });
}
if (rulesOpen)
    await screenshot(SCREENSHOT_RULES);

if (ruleAdded && browsed) {
    await check('the next request through tapwire comes back rewritten by the new rule', async () => {
        const res = await p2.goto(ORIGIN + CONN_PATH, { timeout: WAIT_MS });
        const text = await p2.locator('body').textContent();
        assert(res.status() === 200 && /^CONN=\d+ req=\d+/.test(text.trim()), `status ${res.status()}, body: ${text.slice(0, 200)}`);
    });

    const connRow = row(CONN_PATH).first();
    const marked = await check('its flow appears with the modified mark', async () => {
        await page.locator('#view-flows').click();
        await page.locator('#split').waitFor({ state: 'visible' });
        await connRow.waitFor({ timeout: WAIT_MS });
        assert(await connRow.locator('td.c-marks .icon-modified').count() === 1, 'no modified mark on the row');
    });

    if (marked) {
        await check('its detail shows the rewritten body and who modified it', async () => {
            await connRow.locator('td.c-path').click();
            await page.locator('#tab-response').click();
            await until('rewritten response body', async () => {
                const t = await page.locator('#panel-response pre.body-text').textContent({ timeout: 1000 });
                return /^CONN=\d+ req=\d+/.test(t.trim());
            });
            const chip = await page.locator('#d-summary .chip-mod').textContent();
            assert(/^Modified by: .*#\d+/.test(chip), `chip: ${chip}`);
        });

        await check('the Changes tab shows the original body beside the sent one', async () => {
            await page.locator('#tab-changes').click();
            const panel = page.locator('#panel-changes');
            await until('original and sent bodies', async () => {
                const orig = await panel.locator('.compare-original pre.body-text').textContent({ timeout: 1000 });
                const sent = await panel.locator('.compare-sent pre.body-text').textContent({ timeout: 1000 });
                return /^conn=\d+ req=\d+/.test(orig.trim()) && /^CONN=\d+ req=\d+/.test(sent.trim());
            });
            assert((await panel.locator('.changes-by').textContent()).includes('#'), 'no rule named');
        });
        if (SCREENSHOT_CHANGES)
            await screenshot(SCREENSHOT_CHANGES);
    }
}

/* (h) the SQL view asks the flows in SQL, read-only, and shows a table */
await check('the SQL view runs a query and shows its rows as a table', async () => {
    await page.locator('#view-sql').click();
    await page.locator('#sql-view').waitFor({ state: 'visible' });
    await page.locator('#sql-input').fill("SELECT count(*) AS n, '<b>not html</b>' AS t FROM flows");
    await page.locator('#sql-run').click();
    await until('the result table', async () => {
        if (!(await page.locator('#sql-table').isVisible()))
            return false;
        const head = await page.locator('#sql-head th').allTextContents();
        const cells = await page.locator('#sql-rows td').allTextContents();
        return head.join(',') === 'n,t' && /^[1-9]\d*$/.test(cells[0]) && cells[1] === '<b>not html</b>';
    });
    assert(await page.locator('#sql-rows b').count() === 0, 'a cell was rendered as HTML');
});

await check('the SQL view shows SQLite\'s refusal of a write', async () => {
    /* flows_1, the first segment's table: flows is a view (tapwire-db(5)). */
    await page.locator('#sql-input').fill('DELETE FROM flows_1');
    await page.locator('#sql-run').click();
    await until('the refusal', async () => {
        const n = page.locator('#sql-notice');
        return (await n.isVisible()) && /not authorized/.test(await n.textContent());
    });
    await page.locator('#view-flows').click();
});

await check('Import HAR adds the file\'s entries as flows marked imported', async () => {
    const har = {
        log: {
            version: '1.2',
            entries: [{
                startedDateTime: '2023-11-14T22:13:20.000Z',
                request: { method: 'GET', url: 'http://imported.test/from-a-har-file', headers: [] },
                response: { status: 204, statusText: 'No Content', headers: [], content: { size: 0 } },
                timings: { send: 1, wait: 2, receive: 3 },
            }],
        },
    };
    await page.locator('#view-flows').click();
    await page.locator('#import-har-file').setInputFiles({
        name: 'capture.har', mimeType: 'application/json', buffer: Buffer.from(JSON.stringify(har)),
    });
    await until('the toast', async () => /Imported 1 flow/.test(await page.locator('#toast').textContent()));
    const row = page.locator('#flow-rows tr', { hasText: '/from-a-har-file' });
    await row.waitFor({ timeout: WAIT_MS });
    assert(await row.locator('td.c-marks .badge', { hasText: 'HAR' }).count() === 1, 'no HAR mark on the row');
});

await check('the page caused no CSP violations and no script errors', async () => {
    const csp = await page.evaluate(() => window.__cspViolations || []);
    const cspConsole = consoleErrors.filter((t) => /Content Security Policy|Refused to/i.test(t));
    assert(csp.length === 0 && cspConsole.length === 0, `CSP: ${[...csp, ...cspConsole].join(' ; ')}`);
    assert(pageErrors.length === 0, `script errors: ${pageErrors.join(' ; ')}`);
});

await check('every /api fetch carried the X-Tapwire-Token header', async () => {
    /* EventSource cannot set headers: the spec lets it use the cookie. */
    const fetches = apiRequests.filter((r) => new URL(r.url()).pathname !== '/api/events');
    assert(fetches.length > 0, 'no /api requests seen');
    for (const r of fetches) {
        const h = await r.allHeaders();
        assert(h['x-tapwire-token'] === TOKEN, `${r.method()} ${r.url()} without the token header`);
    }
});

if (consoleErrors.length)
    console.log(`# console errors (not failing by themselves): ${consoleErrors.join(' ; ')}`);
console.log(`# ${failures()} failed`);
await finish();
