// Drives the live page of a running `vigia serve --demo` in Debian's chromium.
//
//   VIGIA_URL=http://127.0.0.1:18080 VIGIA_TOKEN=… [SCREENSHOT_DIR=…] node --test page.test.mjs
//
// The steps build on each other (sign in, watch a reading arrive, ack its alert), so they
// run in order inside one `describe` and share one desktop page.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';

const BASE = (process.env.VIGIA_URL || '').replace(/\/+$/, '');
const TOKEN = process.env.VIGIA_TOKEN || '';
const SHOTS = process.env.SCREENSHOT_DIR || '';
const DEMO_SENSORS = ['CF-1', 'CF-2', 'REF-3'];
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

if (!BASE || !TOKEN) {
  throw new Error('set VIGIA_URL (e.g. http://127.0.0.1:18080) and VIGIA_TOKEN to the server and its API key');
}

const card = (page, key) => page.locator(`article.card[data-sensor="${key}"]`);

async function shot(page, name) {
  if (!SHOTS) return;
  fs.mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SHOTS, name), fullPage: true });
}

async function apiJson(pathAndQuery, init = {}) {
  const res = await fetch(`${BASE}${pathAndQuery}`, {
    ...init,
    headers: { Authorization: `Bearer ${TOKEN}`, 'Content-Type': 'application/json', ...init.headers },
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

/** Opens the page in a fresh context (own storage) and records script errors. */
async function openPage(browser, url, contextOptions = {}) {
  const context = await browser.newContext(contextOptions);
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (err) => errors.push(String(err)));
  await page.goto(url);
  return { context, page, errors };
}

/** Waits until each demo sensor has a card with a number and a sparkline of ≥ 2 points. */
async function waitForDemoCards(page) {
  for (const key of DEMO_SENSORS) {
    const c = card(page, key);
    await c.waitFor({ state: 'visible', timeout: 10_000 });
    await assertEventually(async () => /^-?\d+\.\d$/.test(await c.locator('.value').textContent()), `${key} shows a number`);
    // A freshly started demo has seconds of history; live points fill it in every 5 s.
    await assertEventually(
      async () => Number(await c.locator('svg.spark').getAttribute('data-points')) >= 2,
      `${key} sparkline has points`,
      20_000,
    );
    const d = await c.locator('svg.spark path.line').getAttribute('d');
    assert.match(d, /^M[\d.]+,[\d.]+ [ML][\d.]+,[\d.]+/, `${key} sparkline path draws a line`);
  }
}

async function assertEventually(check, what, timeoutMs = 5_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) assert.fail(`timed out after ${timeoutMs} ms waiting until: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('live page', () => {
  let browser;
  let desktop;

  before(async () => {
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
    // A run less than a minute after the last one would find CF-1's alert still open
    // (it resolves after a hold); an unresolved alert blocks the new one this test needs.
    for (const alertState of ['open', 'acked']) {
      const list = await apiJson(`/api/v1/alerts?state=${alertState}`);
      assert.equal(list.status, 200, `GET /api/v1/alerts?state=${alertState}`);
      for (const alert of list.body.filter((a) => a.sensor === 'CF-1')) {
        const resolved = await apiJson(`/api/v1/alerts/${alert.id}/resolve`, { method: 'POST' });
        assert.equal(resolved.status, 200, `resolving leftover alert ${alert.id}`);
      }
    }
    desktop = await openPage(browser, `${BASE}/#token=${encodeURIComponent(TOKEN)}`, {
      viewport: { width: 1280, height: 900 },
    });
  });

  after(async () => {
    await browser?.close();
  });

  it('takes the token from the login link and removes it from the URL', async () => {
    const { page } = desktop;
    await assertEventually(async () => !page.url().includes('token='), 'the token is gone from the URL');
    assert.equal(new URL(page.url()).hash, '');
    assert.equal(await page.evaluate(() => localStorage.getItem('vigia.token')), TOKEN);
    assert.equal(await page.locator('#signin').isVisible(), false, 'no sign-in form when signed in');
  });

  it('shows a card per demo sensor with a value and a sparkline, and goes live', async () => {
    const { page } = desktop;
    await waitForDemoCards(page);
    await assertEventually(async () => (await page.locator('#conn').getAttribute('data-state')) === 'live', 'live');
    assert.match(await page.locator('#counts').textContent(), /^3 sensors · \d+ open alerts?/);
    for (const key of DEMO_SENSORS) {
      const badge = (await card(page, key).locator('.badge').textContent()).trim();
      assert.ok(['OK', 'WARNING', 'CRITICAL', 'STALE'].includes(badge), `${key} status has a text label: ${badge}`);
      assert.match(await card(page, key).locator('.updated').textContent(), /^updated /);
    }
    await shot(page, 'desktop.png');
  });

  it('shows a posted reading, its critical status and its alert without reloading', async () => {
    const { page, errors } = desktop;
    // A marker that a reload would wipe: proves the update arrived live.
    await page.evaluate(() => {
      window.__noReload = true;
    });
    const posted = await apiJson('/api/v1/readings', {
      method: 'POST',
      body: JSON.stringify({ sensor: 'CF-1', value: -16, ts: new Date().toISOString() }),
    });
    assert.equal(posted.status, 202, `POST /api/v1/readings: ${JSON.stringify(posted.body)}`);

    const cf1 = card(page, 'CF-1');
    await assertEventually(async () => (await cf1.locator('.value').textContent()) === '-16.0', 'CF-1 shows -16.0');
    await assertEventually(async () => (await cf1.getAttribute('data-status')) === 'critical', 'CF-1 turns critical');
    assert.equal((await cf1.locator('.badge').textContent()).trim(), 'CRITICAL');
    const alert = cf1.locator('li.alert.open[data-severity="critical"]').first();
    await alert.waitFor({ state: 'visible', timeout: 5_000 });
    assert.match(await alert.locator('.msg').textContent(), /CF-1/);
    assert.equal(await alert.locator('button.ack').textContent(), 'Ack');
    assert.equal(await page.evaluate(() => window.__noReload), true, 'the page did not reload');
    await shot(page, 'desktop-critical.png');
    assert.deepEqual(errors, [], 'no script errors');
  });

  it('acknowledges the alert from its Ack button', async () => {
    const { page } = desktop;
    const cf1 = card(page, 'CF-1');
    const alert = cf1.locator('li.alert.open[data-severity="critical"]').first();
    const id = Number(await alert.getAttribute('data-alert-id'));
    await alert.locator('button.ack').click();

    const acked = cf1.locator(`li.alert[data-alert-id="${id}"]`);
    await assertEventually(async () => (await acked.getAttribute('class'))?.includes('acked'), 'the alert shows as acked');
    assert.match(await acked.locator('.meta').textContent(), /acked by /);
    assert.equal(await acked.locator('button.ack').count(), 0, 'an acked alert has no Ack button');
    assert.equal(await cf1.locator('.card-error').isVisible(), false, 'no ack error shown');

    const list = await apiJson('/api/v1/alerts?state=acked');
    assert.equal(list.status, 200);
    assert.ok(list.body.some((a) => a.id === id && a.state === 'acked'), `alert ${id} is in ?state=acked`);
    // Still an open incident: the card stays critical.
    assert.equal(await cf1.getAttribute('data-status'), 'critical');
  });

  it('fits a phone: one column and no horizontal scroll', async () => {
    const phone = await openPage(browser, `${BASE}/#token=${encodeURIComponent(TOKEN)}`, {
      viewport: { width: 390, height: 844 },
      deviceScaleFactor: 2,
      isMobile: true,
      hasTouch: true,
    });
    try {
      await waitForDemoCards(phone.page);
      const lefts = await phone.page.$$eval('article.card', (cards) => cards.map((c) => c.getBoundingClientRect().left));
      assert.ok(lefts.length >= 3, 'cards are there');
      assert.equal(new Set(lefts).size, 1, `one column, card left edges: ${lefts}`);
      const scrollWidth = await phone.page.evaluate(() => document.scrollingElement.scrollWidth);
      assert.ok(scrollWidth <= 390, `no horizontal scroll: scrollWidth ${scrollWidth}`);
      const ack = await phone.page.$$eval('button', (buttons) =>
        buttons.filter((b) => b.offsetParent).map((b) => b.getBoundingClientRect().height),
      );
      assert.ok(ack.every((h) => h >= 44), `tap targets at least 44 px high: ${ack}`);
      await shot(phone.page, 'phone.png');
      assert.deepEqual(phone.errors, [], 'no script errors');
    } finally {
      await phone.context.close();
    }
  });

  it('asks for a key when the token is wrong', async () => {
    const wrong = await openPage(browser, `${BASE}/#token=not-a-valid-key`, { viewport: { width: 390, height: 844 } });
    try {
      const form = wrong.page.locator('#signin');
      await form.waitFor({ state: 'visible', timeout: 10_000 });
      const message = wrong.page.locator('#signin-msg');
      await message.waitFor({ state: 'visible', timeout: 5_000 });
      assert.match(await message.textContent(), /not accepted/);
      assert.equal(await wrong.page.evaluate(() => localStorage.getItem('vigia.token')), null, 'bad key forgotten');
      assert.equal(await wrong.page.locator('article.card').count(), 0, 'no cards without a valid key');
      await shot(wrong.page, 'signin.png');

      // The form then signs in with the right key.
      await wrong.page.fill('#signin-key', TOKEN);
      await wrong.page.click('#signin button[type="submit"]');
      await card(wrong.page, 'CF-1').waitFor({ state: 'visible', timeout: 10_000 });
      assert.equal(await form.isVisible(), false);
      assert.deepEqual(wrong.errors, [], 'no script errors');
    } finally {
      await wrong.context.close();
    }
  });
});
