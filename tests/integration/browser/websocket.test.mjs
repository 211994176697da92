/*
 * Drives the dashboard's WebSocket conversation in headless Chromium for
 * test_websocket.sh, which starts tapwire, the peers and Chromium (and
 * kills them); this script connects over CDP, opens the dashboard on the
 * flow of a connection still open, and checks that the Messages tab shows
 * its messages as text (markup in a message stays text), then, after the
 * shell lets the client go on (GO_FILE), that the later messages appear
 * without a reload. One line per check to $RESULTS ("PASS<TAB>name" or
 * "FAIL<TAB>name<TAB>detail"). Every wait is bounded by WAIT_MS.
 *
 * Environment: CDP_URL, DASHBOARD_URL (with ?token=), FLOW_ID, FIRST (the
 * first message's text), GO_FILE, RESULTS, SCREENSHOT, WAIT_MS.
 */
import { writeFileSync } from 'node:fs';
import { chromium } from 'playwright-core';
import { WAIT_MS, check, env, startResults } from './harness.mjs';

const CDP_URL = env('CDP_URL');
const DASHBOARD_URL = env('DASHBOARD_URL');
const FLOW_ID = env('FLOW_ID');
const FIRST = env('FIRST');
const GO_FILE = env('GO_FILE');
const RESULTS = env('RESULTS');
const SCREENSHOT = env('SCREENSHOT');
startResults(RESULTS);

const browser = await chromium.connectOverCDP(CDP_URL, { timeout: WAIT_MS });
try {
    const context = await browser.newContext();
    const page = await context.newPage();
    const items = page.locator('#panel-messages li.ws-msg');
    await check('the flow opens with a Messages tab', async () => {
        await page.goto(`${DASHBOARD_URL}#flow=${FLOW_ID}`, { timeout: WAIT_MS });
        await page.locator('#tab-messages').waitFor({ state: 'visible', timeout: WAIT_MS });
        await page.locator('#tab-messages').click();
    });
    await check('the open connection shows its first message and echo', async () => {
        await items.nth(1).waitFor({ timeout: WAIT_MS });
        const n = await items.count();
        if (n !== 2)
            throw new Error(`${n} messages shown`);
        const dirs = await page.locator('#panel-messages .ws-dir').allTextContents();
        if (!dirs[0].includes('client to server') || !dirs[1].includes('server to client'))
            throw new Error(`directions: ${dirs.join(' | ')}`);
    });
    await check('markup in a message is shown as text', async () => {
        const text = await items.nth(0).locator('pre').textContent();
        if (text !== FIRST)
            throw new Error(`shown: ${text}`);
        const made = await page.locator('#panel-messages b, #panel-messages script').count();
        if (made !== 0)
            throw new Error(`${made} elements made from a message`);
    });
    writeFileSync(GO_FILE, 'go\n');
    await check('later messages appear while the tab stays open', async () => {
        await items.nth(5).waitFor({ timeout: WAIT_MS });
        const last = await items.nth(5).textContent();
        if (!last.includes('close') || !last.includes('1000'))
            throw new Error(`last message: ${last}`);
    });
    await page.screenshot({ path: SCREENSHOT, fullPage: true }).catch(() => {});
} finally {
    await browser.close().catch(() => {});
}
