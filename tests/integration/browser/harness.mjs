/*
 * What every browser driver of the integration tests shares: its settings
 * from the environment, one line per check in the results file
 * ("PASS<TAB>name" or "FAIL<TAB>name<TAB>detail", read by browser_results
 * in ../lib.sh, which owns the verdict), assertions, and waits bounded by
 * WAIT_MS.
 */
import { appendFileSync, writeFileSync } from 'node:fs';
import { basename } from 'node:path';

/* The variable's value, or dflt; without either the driver stops (exit 2). */
export function env(name, dflt) {
    const v = process.env[name] ?? dflt;
    if (v === undefined) {
        console.error(`${basename(process.argv[1] || 'driver')}: ${name} is not set`);
        process.exit(2);
    }
    return v;
}

export const WAIT_MS = Number(env('WAIT_MS', '10000'));

let resultsPath = null;
let failed = 0;

/* Starts the results file afresh. */
export function startResults(path) {
    resultsPath = path;
    writeFileSync(path, '');
}

/* How many checks failed so far. */
export const failures = () => failed;

export function record(ok, name, detail) {
    const clean = (s) => String(s).replace(/[\t\r\n]+/g, ' ').slice(0, 1500);
    appendFileSync(resultsPath, ok ? `PASS\t${clean(name)}\n` : `FAIL\t${clean(name)}\t${clean(detail)}\n`);
    console.log(`# ${ok ? 'pass' : 'FAIL'}: ${name}${ok ? '' : ' -- ' + detail}`);
    if (!ok)
        failed++;
}

/* Runs one check; returns whether it passed. */
export async function check(name, fn) {
    try {
        await fn();
        record(true, name);
        return true;
    } catch (e) {
        record(false, name, e && e.message ? e.message.split('\n').slice(0, 6).join(' | ') : e);
        return false;
    }
}

export function assert(cond, msg) {
    if (!cond)
        throw new Error(msg);
}

/* Polls until fn() is truthy, at most ms. */
export async function until(what, fn, ms = WAIT_MS) {
    const deadline = Date.now() + ms;
    let last;
    for (;;) {
        try {
            last = await fn();
            if (last)
                return last;
        } catch (e) {
            last = e.message;
        }
        if (Date.now() >= deadline)
            throw new Error(`${what}: not within ${ms} ms (last: ${String(last).slice(0, 300)})`);
        await new Promise((r) => setTimeout(r, 100));
    }
}
