// Budgets of the web UI, measured in headless Chromium against a real server (release build by
// default) on a fresh data directory:
//   - the run page's first load: bytes transferred and time until its graph is drawn;
//   - a run of 100 tasks whose first task writes 10,000 log lines while the page follows it:
//     the longest main-thread task (a frame the page could not draw) while the lines stream.
//
// Usage: node tests/browser/bench-ui.mjs [--gofer PATH] [--lines N]
// (`make bench` runs it; needs Docker, the gofer-busybox:local image and scripts/setup.sh.)
import { chromium } from 'playwright-core';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer } from 'node:net';

const argument = (name, fallback) => {
  const at = process.argv.indexOf(name);
  return at > 0 ? process.argv[at + 1] : fallback;
};
const target = process.env.CARGO_TARGET_DIR || join(import.meta.dirname, '../../target');
const gofer = argument('--gofer', join(target, 'release/gofer'));
const lines = Number(argument('--lines', '10000'));

const port = await new Promise((resolve) => {
  const server = createServer().listen(0, '127.0.0.1', () => {
    const { port: free } = server.address();
    server.close(() => resolve(free));
  });
});
const base = `http://127.0.0.1:${port}`;
const dataDir = mkdtempSync(join(tmpdir(), 'gofer-bench-ui-'));
const server = spawn(gofer, ['service', 'start', '--bind', `127.0.0.1:${port}`, '--data-dir', dataDir],
  { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, RUST_LOG: 'warn' } });
const stop = () => {
  server.kill('SIGTERM');
  rmSync(dataDir, { recursive: true, force: true });
};

const api = async (method, path, body) => {
  const response = await fetch(base + path, {
    method,
    headers: { 'gofer-api-version': 'v0', 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${text}`);
  return text ? JSON.parse(text) : null;
};

try {
  for (let attempt = 0; ; attempt++) {
    try {
      await api('GET', '/api/system/metadata');
      break;
    } catch (error) {
      if (attempt > 200) throw error;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  // 100 tasks: `logs` writes the lines in bursts, 99 others in ten layers below it.
  const script = `i=0; while [ $i -lt ${lines} ]; do echo "line $i \\033[32mok\\033[0m some text to make the line longer"; ` +
    'i=$((i+1)); [ $((i % 1000)) -eq 0 ] && sleep 0.2; done';
  const tasks = [{ id: 'logs', image: 'gofer-busybox:local', command: ['sh', '-c', script], depends_on: {} }];
  for (let index = 1; index < 100; index++) {
    const layer = Math.floor((index - 1) / 10);
    const parent = layer === 0 ? 'logs' : `t${String((layer - 1) * 10 + 1 + ((index - 1) % 10)).padStart(2, '0')}`;
    tasks.push({ id: `t${String(index).padStart(2, '0')}`, image: 'gofer-busybox:local', command: ['true'],
      depends_on: { [parent]: 'any' } });
  }
  const config = { id: 'uibench', name: 'UI bench', parallelism: 1, tasks };
  await api('POST', '/api/namespaces/default/pipelines/uibench/configs', { config });
  await api('POST', '/api/namespaces/default/pipelines/uibench/configs/1');
  const small = { id: 'small', name: 'small', tasks: [{ id: 'one', image: 'gofer-busybox:local', command: ['true'], depends_on: {} }] };
  await api('POST', '/api/namespaces/default/pipelines/small/configs', { config: small });
  await api('POST', '/api/namespaces/default/pipelines/small/configs/1');
  await api('POST', '/api/namespaces/default/pipelines/small/runs', { variables: {} });
  await new Promise((resolve) => setTimeout(resolve, 2000));

  const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true,
    args: ['--no-sandbox', '--disable-gpu'] });

  // First load of a run page: a new browser context (empty cache).
  const loads = [];
  for (let round = 0; round < 5; round++) {
    const context = await browser.newContext();
    const page = await context.newPage();
    let bytes = 0;
    const client = await context.newCDPSession(page);
    await client.send('Network.enable');
    client.on('Network.loadingFinished', (event) => { bytes += event.encodedDataLength; });
    const started = performance.now();
    await page.goto(`${base}/#/ns/default/p/small/runs/1`);
    await page.waitForSelector('#dag [data-task="one"]');
    loads.push({ ms: performance.now() - started, bytes });
    await context.close();
  }
  loads.sort((a, b) => a.ms - b.ms);
  const median = loads[Math.floor(loads.length / 2)];
  console.log(`run page, first load: ${median.bytes} bytes transferred, graph drawn in ${median.ms.toFixed(0)} ms (median of ${loads.length})`);

  // 100 tasks, 10,000 lines followed live.
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  await page.goto(`${base}/`);
  await page.evaluate(() => {
    window.__long = [];
    new PerformanceObserver((list) => {
      for (const entry of list.getEntries()) window.__long.push(entry.duration);
    }).observe({ type: 'longtask', buffered: true });
  });
  const { run } = await api('POST', '/api/namespaces/default/pipelines/uibench/runs', { variables: {} });
  await page.evaluate((id) => { location.hash = `#/ns/default/p/uibench/runs/${id}?task=logs`; }, run.run_id);
  await page.waitForSelector('#dag [data-task="t99"]');
  await page.evaluate(() => { window.__long = []; });
  const followed = performance.now();
  await page.waitForFunction((count) => document.querySelectorAll('#log .ln').length >= count, lines, { timeout: 180000, polling: 200 });
  const streamed = performance.now() - followed;
  const long = await page.evaluate(() => window.__long);
  await page.waitForFunction(() => document.querySelector('h1')?.textContent.includes('complete'), null, { timeout: 300000, polling: 500 });
  const total = await page.evaluate(() => window.__long);
  // The browser reports main-thread tasks of 50 ms or more only.
  const longest = (values) => (values.length ? `${Math.max(...values).toFixed(0)} ms` : 'none of 50 ms or more');
  console.log(`100 tasks, ${lines} log lines followed live: ${(streamed / 1000).toFixed(1)} s of streaming; ` +
    `longest main-thread task while streaming: ${longest(long)} (${long.filter((d) => d > 100).length} over 100 ms); ` +
    `until the run ended: ${longest(total)}`);
  await browser.close();
} finally {
  stop();
}
