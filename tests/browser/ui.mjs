// End-to-end checks of Gofer's web UI in one headless Chromium session, against real servers
// started by host/tests/it/ui.rs (which prepares their pipelines, plugins and tokens and passes
// them here in the environment). Exits non-zero with the failed check's message.
//
//   GOFER_UI_URL          a development-mode server (no sign-in)
//   GOFER_UI_SECURED_URL  a server with authentication on
//   GOFER_UI_TOKEN        a token on it that may read namespace GOFER_UI_ALLOWED only
//   GOFER_UI_ALLOWED, GOFER_UI_FORBIDDEN   namespaces it may and may not read
//   GOFER_UI_SHOTS        where to save screenshots
//   CHROMIUM              the browser (default /usr/bin/chromium)
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const url = env('GOFER_UI_URL');
const securedUrl = env('GOFER_UI_SECURED_URL');
const shots = env('GOFER_UI_SHOTS');
mkdirSync(shots, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run'],
});
const failures = [];
let step = '';
const check = (condition, message) => {
  if (!condition) throw new Error(`${step}: ${message}`);
};
const shot = (page, name) => page.screenshot({ path: `${shots}/${name}.png`, fullPage: false });

async function run(name, body) {
  step = name;
  const started = Date.now();
  try {
    await body();
    console.log(`ok   ${name} (${Date.now() - started} ms)`);
  } catch (error) {
    console.log(`FAIL ${name}: ${error.message}`);
    failures.push(name);
  }
}

const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
const page = await context.newPage();
const consoleErrors = [];
page.on('console', (message) => {
  // A refused request (a 404 from whoami in development mode, a 403 shown on the page) is logged
  // by the browser as "Failed to load resource"; the page handles those. Anything else counts.
  if (message.type() === 'error' && !message.text().startsWith('Failed to load resource')) {
    consoleErrors.push(message.text());
  }
});
page.on('pageerror', (error) => consoleErrors.push(String(error)));

// One document for the whole first part: nothing below reloads it.
await page.goto(url);
await page.evaluate(() => { window.__sameDocument = true; });
const sameDocument = async () => check(await page.evaluate(() => window.__sameDocument === true), 'the page reloaded');

await run('the pipelines page lists pipelines with their state, live version and triggers', async () => {
  await page.waitForSelector('[data-pipeline="dag3"]');
  const card = await page.textContent('[data-pipeline="dag3"]');
  check(card.includes('active') && card.includes('live v1'), `card: ${card}`);
  check((await page.textContent('[data-pipeline="ticking"]')).includes('interval:tick'), 'the trigger is not shown');
  await page.keyboard.press('/');
  await page.keyboard.type('dag');
  check(await page.isHidden('[data-pipeline="long"]'), 'the filter did not hide the other pipelines');
  check(await page.isVisible('[data-pipeline="dag3"]'), 'the filter hid the match');
  await page.fill('input[type=search]', '');
});

await run('a run started from the UI shows its tasks going from waiting to running to successful, live', async () => {
  await page.click('[data-pipeline="dag3"] a.title');
  await page.waitForSelector('#start-run');
  await page.fill('.var-key', 'GREETING');
  await page.fill('.var-value', 'hello from the browser');
  await page.click('#start-run');
  await page.waitForSelector('#dag [data-task="slow"]');
  // Record every status each node shows, as the page updates itself.
  await page.evaluate(() => {
    window.__seen = {};
    const record = () => {
      for (const node of document.querySelectorAll('#dag [data-task]')) {
        const seen = (window.__seen[node.dataset.task] ||= []);
        if (seen[seen.length - 1] !== node.dataset.status) seen.push(node.dataset.status);
      }
    };
    record();
    new MutationObserver(record).observe(document.getElementById('dag'), { subtree: true, childList: true, attributes: true });
  });
  await page.click('#dag [data-task="slow"]');
  // Log lines appear while the task is still running.
  await page.waitForFunction(() => (document.getElementById('log') || {}).textContent?.includes('line 2'), null, { timeout: 30000 });
  const whileRunning = await page.getAttribute('#dag [data-task="slow"]', 'data-status');
  check(whileRunning === 'running', `the log showed 'line 2' but the task is ${whileRunning}`);
  await shot(page, 'run-live');
  await page.waitForFunction(() => document.querySelector('#dag [data-task="report"]')?.dataset.status === 'successful', null, { timeout: 60000 });
  const seen = await page.evaluate(() => window.__seen);
  for (const task of ['build', 'slow', 'report']) {
    const statuses = seen[task] || [];
    check(statuses.includes('running') && statuses[statuses.length - 1] === 'successful',
      `task ${task} went ${statuses.join(' → ')}`);
  }
  check(seen.report[0] === 'waiting' || seen.report[0] === 'processing', `report began ${seen.report[0]}`);
  const log = await page.textContent('#log');
  check(log.includes('line 5') && log.includes('hello from the browser'), `log: ${log}`);
  check(await page.isVisible('#log .a-32'), 'ANSI green is not coloured');
  check(!log.includes('\u001b['), 'raw escape codes in the log');
  check((await page.textContent('#exit-code')).trim() === '0', 'exit code');
  check((await page.textContent('h1')).includes('successful'), 'the run header did not update');
  await sameDocument();
  await shot(page, 'run');
});

await run('a long run is cancelled from the UI', async () => {
  await page.goto(`${url}/#/ns/default/p/long`);
  await page.evaluate(() => { window.__sameDocument = true; });
  await page.click('#start-run');
  await page.waitForFunction(() => document.querySelector('#dag [data-task="sleepy"]')?.dataset.status === 'running', null, { timeout: 30000 });
  await page.click('#cancel-run');
  await page.waitForFunction(() => document.querySelector('h1')?.textContent.includes('cancelled'), null, { timeout: 30000 });
  const status = await page.getAttribute('#dag [data-task="sleepy"]', 'data-status');
  check(status === 'cancelled', `the task is ${status}`);
  // Re-run it from the UI: a new run of the same version starts, and is cancelled in turn.
  const before = page.url();
  await page.click('#rerun');
  await page.waitForFunction((old) => location.href !== old && document.querySelector('#dag [data-task="sleepy"]'), before);
  await page.waitForFunction(() => document.querySelector('#dag [data-task="sleepy"]')?.dataset.status === 'running', null, { timeout: 30000 });
  check((await page.textContent('main')).includes('re-runs'), 'the re-run does not say which run it re-runs');
  await page.click('#cancel-run');
  await page.waitForFunction(() => document.querySelector('h1')?.textContent.includes('cancelled'), null, { timeout: 30000 });
  await sameDocument();
});

await run('a pipeline page shows a canary in progress and diffs two versions', async () => {
  await page.goto(`${url}/#/ns/default/p/ticking`);
  await page.waitForSelector('#deployment-in-progress');
  const canary = await page.textContent('#deployment-in-progress');
  check(canary.includes('v1 → v2') && canary.includes('20%'), `canary: ${canary}`);
  await page.click('text=Diff');
  await page.waitForSelector('.diff .add');
  // The default diff is the previous version against the latest: v2's changes are additions.
  const added = await page.$$eval('.diff .add', (lines) => lines.map((line) => line.textContent).join(''));
  const removed = await page.$$eval('.diff .del', (lines) => lines.map((line) => line.textContent).join(''));
  check(added.includes('echo v2') && added.includes('2h'), `added: ${added}`);
  check(removed.includes('1h') && !removed.includes('echo v2'), `removed: ${removed}`);
  await shot(page, 'pipeline');
});

await run('a failed plugin is shown with its error', async () => {
  await page.click('a[data-nav="plugins"]');
  await page.waitForSelector('#plugins [data-plugin="broken"]');
  check(await page.getAttribute('#plugins [data-plugin="broken"]', 'data-status') === 'failed', 'not failed');
  const error = await page.textContent('#plugins [data-plugin="broken"] .plugin-error');
  check(error.length > 10, `error: ${error}`);
  check(await page.isVisible('#plugins [data-plugin="interval"]'), 'the built-ins are missing');
  await shot(page, 'plugins');
});

await run('the events page streams new events', async () => {
  await page.click('a[data-nav="events"]');
  await page.waitForSelector('#events .ev');
  await page.evaluate(async () => {
    await fetch('/api/namespaces/default/pipelines/dag3', {
      method: 'PATCH', headers: { 'gofer-api-version': 'v0', 'content-type': 'application/json' },
      body: JSON.stringify({ state: 'disabled' }),
    });
  });
  await page.waitForSelector('#events .ev[data-kind="disabled_pipeline"]', { timeout: 10000 });
  await shot(page, 'events');
  // Back on the pipelines page: the runs so far as marks, the disabled pipeline as such.
  await page.click('a[data-nav="pipelines"]');
  await page.waitForFunction(() => document.querySelector('[data-pipeline="dag3"]')?.textContent.includes('disabled'));
  check(await page.isVisible('[data-pipeline="long"] .mark.s-cancelled'), 'the cancelled run has no mark');
  await shot(page, 'pipelines');
});

await run('narrow and dark', async () => {
  const dark = await browser.newContext({ viewport: { width: 390, height: 800 }, colorScheme: 'dark' });
  const phone = await dark.newPage();
  await phone.goto(`${url}/#/ns/default/p/dag3/runs/1`);
  await phone.waitForSelector('#dag [data-task="report"]');
  const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 1, `the page is ${overflow}px wider than a phone`);
  const background = await phone.evaluate(() => getComputedStyle(document.body).backgroundColor);
  check(background !== 'rgb(251, 251, 252)', 'dark mode has the light background');
  await phone.focus('#dag [data-task="build"]');
  await phone.keyboard.press('Enter');
  await phone.waitForSelector('#task-details');
  await phone.screenshot({ path: `${shots}/run-narrow-dark.png`, fullPage: true });
  await dark.close();
});

await run('sign-in with a token, and a 403 explained', async () => {
  const secured = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  const tab = await secured.newPage();
  await tab.goto(securedUrl);
  await tab.waitForSelector('#token');
  await shot(tab, 'signin');
  await tab.fill('#token', 'not-a-token');
  await tab.click('button[type=submit]');
  await tab.waitForFunction(() => document.getElementById('signin-status').textContent.includes('does not accept'));
  await tab.fill('#token', env('GOFER_UI_TOKEN'));
  await tab.click('button[type=submit]');
  await tab.waitForSelector('#who button');
  const allowed = env('GOFER_UI_ALLOWED');
  await tab.goto(`${securedUrl}/#/ns/${allowed}`);
  await tab.waitForSelector('[data-pipeline="team-pipeline"]');
  const options = await tab.$$eval('#namespace option', (list) => list.map((option) => option.value));
  check(!options.includes(env('GOFER_UI_FORBIDDEN')), `the switcher offers ${options}`);
  // The token lives in the tab's session storage, never in the URL.
  check(!tab.url().includes(env('GOFER_UI_TOKEN')), 'the token is in the URL');
  await tab.goto(`${securedUrl}/#/ns/${env('GOFER_UI_FORBIDDEN')}`);
  await tab.waitForSelector('[data-problem="403"]');
  const notice = await tab.textContent('[data-problem="403"]');
  check(notice.includes('ui-user') && notice.includes('Not allowed'), `notice: ${notice}`);
  await shot(tab, 'forbidden');
  // Live updates work with the token (websocket subprotocol).
  await tab.goto(`${securedUrl}/#/ns/${allowed}`);
  await tab.waitForFunction(() => document.getElementById('live').classList.contains('on'), null, { timeout: 10000 });
  await secured.close();
});

await run('no script errors', async () => {
  check(consoleErrors.length === 0, consoleErrors.join('\n'));
});

// The budgets (bytes, time to the graph, long frames while logs stream) are measured by
// bench-ui.mjs, not here: timings belong to benchmarks.
await browser.close();
if (failures.length) {
  console.log(`${failures.length} failed: ${failures.join('; ')}`);
  process.exit(1);
}
