// Gofer's web UI: a client of the REST API, like the CLI. No framework and no build step: the
// server embeds this file as written. Pages are functions that draw into <main> and refresh
// themselves (throttled) when an event about what they show arrives on the event stream.
// Everything from the server is put into the page as text, never as HTML.
'use strict';

const API = '/api';
const TOKEN_KEY = 'gofer-token';
const NAMESPACE_KEY = 'gofer-namespace';
const session = {
  token: sessionStorage.getItem(TOKEN_KEY) || '',
  namespace: sessionStorage.getItem(NAMESPACE_KEY) || 'default',
  who: null, // the token's user, or 'development mode'
};

// ---- helpers ---------------------------------------------------------------------------------

const enc = encodeURIComponent;

/** An element: `h('a', {href, class, onclick}, child, 'text', ...)`. */
function h(tag, props, ...children) {
  const element = document.createElement(tag);
  setProps(element, props);
  for (const child of children.flat(Infinity)) {
    if (child == null || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

/** An SVG element. */
function svg(tag, props, ...children) {
  const element = document.createElementNS('http://www.w3.org/2000/svg', tag);
  setProps(element, props);
  for (const child of children.flat(Infinity)) {
    if (child == null || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

function setProps(element, props) {
  for (const [key, value] of Object.entries(props || {})) {
    if (value == null || value === false) continue;
    if (key.startsWith('on')) element.addEventListener(key.slice(2), value);
    else if (key === 'class') element.setAttribute('class', value);
    else element.setAttribute(key, value === true ? '' : value);
  }
}

function badge(text, kind) {
  return h('span', { class: `badge s-${kind || text}` }, text);
}

function ago(millis) {
  if (!millis) return 'never';
  const seconds = Math.round((Date.now() - millis) / 1000);
  if (seconds < 5) return 'now';
  if (seconds < 90) return `${seconds}s ago`;
  if (seconds < 5400) return `${Math.round(seconds / 60)}m ago`;
  if (seconds < 129600) return `${Math.round(seconds / 3600)}h ago`;
  return new Date(millis).toLocaleString();
}

function duration(start, end) {
  if (!start) return '';
  const millis = (end || Date.now()) - start;
  if (millis < 1000) return `${millis} ms`;
  if (millis < 60000) return `${(millis / 1000).toFixed(1)} s`;
  return `${Math.floor(millis / 60000)}m ${Math.floor((millis % 60000) / 1000)}s`;
}

/** Runs `fn` at most every `wait` ms, and once more after the last call in a burst. */
function throttled(fn, wait = 300) {
  let timer = null;
  let pending = false;
  const run = () => {
    pending = false;
    timer = setTimeout(() => {
      timer = null;
      if (pending) run();
    }, wait);
    Promise.resolve(fn()).catch((error) => console.warn(error));
  };
  return () => {
    if (timer) pending = true;
    else run();
  };
}

/** An event's kind name and its body: `{"kind": {"started_run": {...}}}`. */
function eventParts(event) {
  const kind = event.kind;
  if (typeof kind === 'string') return [kind, {}];
  const name = Object.keys(kind || {})[0] || 'unknown';
  return [name, kind[name] || {}];
}

// ---- the API ---------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body, method, path) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.requestId = body && body.request_id;
    this.method = method;
    this.path = path;
  }
}

async function api(path, { method = 'GET', body, text = false } = {}) {
  const headers = { 'gofer-api-version': 'v0' };
  if (session.token) headers.authorization = `Bearer ${session.token}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const response = await fetch(API + path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const raw = await response.text();
  if (!response.ok) {
    let parsed;
    try {
      parsed = JSON.parse(raw);
    } catch {
      parsed = { message: raw };
    }
    throw new ApiError(response.status, parsed, method, path);
  }
  if (text) return raw;
  return raw ? JSON.parse(raw) : null;
}

/** A websocket on the API. A browser cannot set headers on one: the version and the token
 * travel as subprotocols (never in the URL). */
function socket(path) {
  const url = location.origin.replace(/^http/, 'ws') + API + path;
  const protocols = ['gofer.v0'];
  if (session.token) protocols.push(`gofer.bearer.${session.token}`);
  return new WebSocket(url, protocols);
}

/** What the page shows instead of data it could not get: 401 goes to sign-in, 403 says whose
 * token may not do what, anything else says what failed with its request id. */
function problem(error, what) {
  if (!(error instanceof ApiError)) {
    return h('div', { class: 'notice error', role: 'alert' },
      h('h2', {}, `Could not load ${what}`), h('p', {}, String(error.message || error)),
      h('p', { class: 'muted' }, 'Is the server running? The page retries when it reconnects.'));
  }
  if (error.status === 401) {
    setTimeout(() => signIn(error.message), 0);
    return h('div', { class: 'notice', role: 'alert' }, 'Sign in to see this.');
  }
  if (error.status === 403) {
    return h('div', { class: 'notice', role: 'alert', 'data-problem': '403' },
      h('h2', {}, `Not allowed: ${what}`),
      h('p', {}, `Your token (${session.who || 'unknown user'}) may not read this. `,
        'The server said: ', h('q', {}, error.message)),
      h('p', { class: 'muted' },
        'Ask an administrator for a role that allows it (roles: `gofer role list`), or sign in with another token.'),
      h('button', { onclick: () => signIn() }, 'Sign in with another token'));
  }
  return h('div', { class: 'notice error', role: 'alert' },
    h('h2', {}, `Could not load ${what} (${error.status})`), h('p', {}, error.message),
    error.requestId ? h('p', { class: 'muted' }, `request id ${error.requestId}`) : null);
}

/** Runs an action from a button; a refusal is shown next to it, never lost. */
async function act(button, action) {
  const note = button.parentElement.querySelector('.act-note') ||
    button.parentElement.appendChild(h('span', { class: 'act-note muted', role: 'status' }));
  button.disabled = true;
  note.textContent = '';
  try {
    await action();
  } catch (error) {
    note.textContent = error.status === 403
      ? `Not allowed: ${error.message}`
      : `Failed: ${error.message}`;
    note.className = 'act-note s-failed';
  } finally {
    button.disabled = false;
  }
}

// ---- live events -----------------------------------------------------------------------------

const listeners = new Set();
let eventSocket = null;
let reconnectDelay = 500;

function connectEvents() {
  if (eventSocket) eventSocket.close();
  const ws = socket('/events?history=false');
  eventSocket = ws;
  ws.onopen = () => {
    reconnectDelay = 500;
    document.getElementById('live').classList.add('on');
    document.getElementById('live').title = 'Live: updates as events arrive';
  };
  ws.onmessage = (message) => {
    let event;
    try {
      event = JSON.parse(message.data);
    } catch {
      return;
    }
    for (const listener of listeners) listener(event);
  };
  ws.onclose = () => {
    if (eventSocket !== ws) return;
    document.getElementById('live').classList.remove('on');
    document.getElementById('live').title = 'Not live: reconnecting';
    setTimeout(connectEvents, reconnectDelay);
    reconnectDelay = Math.min(reconnectDelay * 2, 10000);
    for (const listener of listeners) listener({ kind: { reconnected: {} } });
  };
}

// ---- routing ---------------------------------------------------------------------------------

let page = null; // { dispose: [] }

function route() {
  const [path, query] = (location.hash.slice(1) || '/').split('?');
  const params = new URLSearchParams(query || '');
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  if (page) for (const dispose of page.dispose) dispose();
  const main = document.getElementById('main');
  const context = {
    dispose: [],
    params,
    onEvent(listener) {
      listeners.add(listener);
      this.dispose.push(() => listeners.delete(listener));
    },
  };
  page = context;
  let section = 'pipelines';
  let draw;
  if (parts[0] === 'signin') {
    section = '';
    draw = () => signInPage(main, context);
  } else if (parts[0] === 'plugins') {
    section = 'plugins';
    draw = () => pluginsPage(main, context);
  } else if (parts[0] === 'events') {
    section = 'events';
    draw = () => eventsPage(main, context);
  } else if (parts[0] === 'ns' && parts[1]) {
    setNamespace(parts[1]);
    const [, namespace, p, pipeline, runs, run] = parts;
    if (p === 'p' && pipeline && runs === 'runs' && run) {
      draw = () => runPage(main, context, namespace, pipeline, Number(run));
    } else if (p === 'p' && pipeline && runs === 'runs') {
      draw = () => runsPage(main, context, namespace, pipeline);
    } else if (p === 'p' && pipeline) {
      draw = () => pipelinePage(main, context, namespace, pipeline);
    } else {
      draw = () => pipelinesPage(main, context, namespace);
    }
  } else {
    draw = () => pipelinesPage(main, context, session.namespace);
  }
  for (const link of document.querySelectorAll('[data-nav]')) {
    link.classList.toggle('on', link.dataset.nav === section);
    if (link.dataset.nav === section) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  main.replaceChildren(h('p', { class: 'muted' }, 'Loading…'));
  Promise.resolve(draw()).catch((error) => {
    if (page === context) main.replaceChildren(problem(error, 'this page'));
  });
}

function setNamespace(namespace) {
  session.namespace = namespace;
  sessionStorage.setItem(NAMESPACE_KEY, namespace);
  const select = document.getElementById('namespace');
  if (![...select.options].some((option) => option.value === namespace)) {
    select.append(h('option', { value: namespace }, namespace));
  }
  select.value = namespace;
}

function pipelineHref(namespace, pipeline, rest = '') {
  return `#/ns/${enc(namespace)}/p/${enc(pipeline)}${rest}`;
}

// ---- sign-in ---------------------------------------------------------------------------------

function signIn(message) {
  if (message) sessionStorage.setItem('gofer-signin-message', message);
  if (!location.hash.startsWith('#/signin')) {
    sessionStorage.setItem('gofer-after-signin', location.hash || '#/');
    location.hash = '#/signin';
  }
}

function signInPage(main) {
  const said = sessionStorage.getItem('gofer-signin-message');
  sessionStorage.removeItem('gofer-signin-message');
  const input = h('input', { type: 'password', id: 'token', autocomplete: 'off', required: true,
    'aria-describedby': 'token-help', placeholder: 'paste your token' });
  const status = h('p', { role: 'status', id: 'signin-status' });
  const form = h('form', { class: 'signin', onsubmit: async (event) => {
    event.preventDefault();
    const before = session.token;
    session.token = input.value.trim();
    try {
      const { token } = await api('/tokens/whoami');
      sessionStorage.setItem(TOKEN_KEY, session.token);
      session.who = token.user;
      await afterSignIn();
      location.hash = sessionStorage.getItem('gofer-after-signin') || '#/';
    } catch (error) {
      session.token = before;
      status.className = 's-failed';
      status.textContent = error.status === 401
        ? `The server does not accept this token: ${error.message}.`
        : `Could not sign in: ${error.message}`;
    }
  } },
  h('h1', {}, 'Sign in'),
  said ? h('div', { class: 'notice', role: 'alert' }, `The server said: ${said}`) : null,
  h('p', { id: 'token-help' },
    'This server needs an API token (development mode is off). Paste one made with ',
    h('code', {}, 'gofer token create'), '. It is kept in this browser tab only, for this session, and never put in a URL.'),
  h('p', {}, h('label', { for: 'token' }, 'Token'), input),
  h('p', {}, h('button', { class: 'primary', type: 'submit' }, 'Sign in')),
  status);
  main.replaceChildren(form);
  input.focus();
}

async function afterSignIn() {
  renderWho();
  await loadNamespaces();
  connectEvents();
}

function renderWho() {
  const who = document.getElementById('who');
  who.replaceChildren();
  if (!session.token) {
    if (session.who) who.append(h('span', { title: 'No token needed: every caller is an administrator' }, session.who));
    return;
  }
  who.append(`${session.who || 'signed in'} · `, h('button', { onclick: () => {
    sessionStorage.removeItem(TOKEN_KEY);
    session.token = '';
    session.who = null;
    renderWho();
    signIn();
  } }, 'Sign out'));
}

async function loadNamespaces() {
  const select = document.getElementById('namespace');
  try {
    const { namespaces } = await api('/namespaces?limit=1000');
    select.replaceChildren(...namespaces.map((namespace) =>
      h('option', { value: namespace.id }, namespace.id)));
  } catch {
    select.replaceChildren();
  }
  setNamespace(session.namespace);
}

// ---- pipelines -------------------------------------------------------------------------------

async function pipelinesPage(main, context, namespace) {
  const filter = h('input', { type: 'search', placeholder: 'Filter pipelines ( / )', 'aria-label': 'Filter pipelines' });
  const list = h('div', { class: 'cards', id: 'pipelines' });
  main.replaceChildren(h('h1', {}, 'Pipelines ', h('span', { class: 'muted' }, `in ${namespace}`)),
    h('div', { class: 'row' }, filter), h('p'), list);
  let cards = [];
  const applyFilter = () => {
    const words = filter.value.toLowerCase();
    for (const card of cards) card.hidden = !card.dataset.search.includes(words);
  };
  filter.addEventListener('input', applyFilter);
  const load = async () => {
    let pipelines;
    try {
      ({ pipelines } = await api(`/namespaces/${enc(namespace)}/pipelines?limit=1000`));
    } catch (error) {
      list.replaceChildren(problem(error, `the pipelines of namespace '${namespace}'`));
      return;
    }
    const base = (id) => `/namespaces/${enc(namespace)}/pipelines/${enc(id)}`;
    const details = await Promise.all(pipelines.map(async (pipeline) => {
      const id = pipeline.pipeline_id;
      const [configs, subscriptions, runs] = await Promise.all([
        api(`${base(id)}/configs?limit=1000`).catch(() => ({ configs: [] })),
        api(`${base(id)}/subscriptions?limit=100`).catch(() => ({ subscriptions: [] })),
        api(`${base(id)}/runs?limit=12&reverse=true`).catch(() => ({ runs: [] })),
      ]);
      return { pipeline, configs: configs.configs, subscriptions: subscriptions.subscriptions, runs: runs.runs };
    }));
    cards = details.map(({ pipeline, configs, subscriptions, runs }) => {
      const id = pipeline.pipeline_id;
      const live = configs.find((config) => config.state === 'live');
      const latest = configs.reduce((found, config) => (!found || config.version > found.version ? config : found), null);
      const shown = live || latest || {};
      const marks = runs.slice().reverse().map((run) => {
        const status = run.state === 'complete' ? run.status : (run.state === 'running' ? 'running' : 'pending');
        return h('a', { class: `mark s-${status}`, href: pipelineHref(namespace, id, `/runs/${run.run_id}`),
          title: `run ${run.run_id}: ${run.state} ${run.status} (v${run.pipeline_config_version})`,
          'aria-label': `run ${run.run_id} ${status}` });
      });
      const card = h('article', { class: 'card', 'data-pipeline': id },
        h('h3', {}, h('a', { class: 'title', href: pipelineHref(namespace, id) }, shown.name || id)),
        h('div', { class: 'row muted' }, id, badge(pipeline.state),
          live ? h('span', {}, `live v${live.version}`) : h('span', {}, 'no live version')),
        subscriptions.length
          ? h('p', {}, 'Triggers: ', subscriptions.map((subscription, index) => [index ? ', ' : '',
              `${subscription.extension_id}:${subscription.subscription_id} `, badge(subscription.status)]))
          : h('p', { class: 'muted' }, 'No triggers'),
        h('div', { class: 'marks', 'aria-label': 'last runs' }, marks.length ? marks : h('span', { class: 'muted' }, 'no runs yet')));
      card.dataset.search = `${id} ${shown.name || ''} ${shown.description || ''}`.toLowerCase();
      return card;
    });
    list.replaceChildren(...(cards.length ? cards : [h('p', { class: 'muted' },
      'No pipelines here yet. Register one: ', h('code', {}, 'gofer pipeline config register --file pipeline.json --deploy'))]));
    applyFilter();
  };
  await load();
  const refresh = throttled(load, 500);
  context.onEvent((event) => {
    const [, body] = eventParts(event);
    if (!body.namespace_id || body.namespace_id === namespace) refresh();
  });
  context.focusFilter = () => filter.focus();
}

// ---- one pipeline ----------------------------------------------------------------------------

async function pipelinePage(main, context, namespace, pipelineId) {
  const base = `/namespaces/${enc(namespace)}/pipelines/${enc(pipelineId)}`;
  const sections = {
    head: h('div'), run: h('section'), runs: h('section'), configs: h('section'), view: h('div'),
    deployments: h('section'), subscriptions: h('section'), secrets: h('section'), objects: h('section'),
  };
  main.replaceChildren(h('div', { class: 'crumbs' }, h('a', { href: `#/ns/${enc(namespace)}` }, namespace), ' / '),
    sections.head, sections.run, sections.runs, sections.configs, sections.view, sections.deployments,
    sections.subscriptions, sections.secrets, sections.objects);
  let configs = [];

  const loadHead = async () => {
    let pipeline;
    try {
      ({ pipeline } = await api(base));
    } catch (error) {
      sections.head.replaceChildren(problem(error, `pipeline '${pipelineId}'`));
      return false;
    }
    ({ configs } = await api(`${base}/configs?limit=1000`));
    configs.sort((a, b) => a.version - b.version);
    const live = configs.find((config) => config.state === 'live');
    const shown = live || configs[configs.length - 1] || {};
    const toggle = h('button', { onclick: (event) => act(event.target, async () => {
      await api(base, { method: 'PATCH', body: { state: pipeline.state === 'active' ? 'disabled' : 'active' } });
      await loadHead();
    }) }, pipeline.state === 'active' ? 'Disable' : 'Enable');
    sections.head.replaceChildren(
      h('h1', {}, shown.name || pipelineId, ' ', badge(pipeline.state)),
      h('p', {}, shown.description || h('span', { class: 'muted' }, 'No description')),
      h('div', { class: 'row' }, h('span', { class: 'muted' }, `id ${pipelineId} · `,
        live ? `live version ${live.version}` : 'no live version', ` · created ${ago(pipeline.created)}`), toggle));
    renderConfigs();
    return true;
  };

  const renderConfigs = () => {
    const left = h('select', { 'aria-label': 'Diff from version' }, configs.map((config) => h('option', { value: config.version }, `v${config.version}`)));
    const right = h('select', { 'aria-label': 'Diff to version' }, configs.map((config) => h('option', { value: config.version }, `v${config.version}`)));
    if (configs.length > 1) left.value = configs[configs.length - 2].version;
    if (configs.length) right.value = configs[configs.length - 1].version;
    sections.configs.replaceChildren(h('h2', {}, 'Config versions'),
      h('div', { class: 'scroll' }, h('table', {},
        h('thead', {}, h('tr', {}, ['version', 'state', 'tasks', 'registered', ''].map((name) => h('th', {}, name)))),
        h('tbody', {}, configs.slice().reverse().map((config) => h('tr', {},
          h('td', {}, `v${config.version}`), h('td', {}, badge(config.state)), h('td', {}, Object.keys(config.tasks || {}).length),
          h('td', {}, ago(config.registered)),
          h('td', {}, h('button', { onclick: () => showConfig(config) }, 'View'))))))),
      configs.length > 1 ? h('p', { class: 'row' }, 'Compare ', left, ' with ', right,
        h('button', { onclick: () => showDiff(Number(left.value), Number(right.value)) }, 'Diff')) : null);
  };

  const configText = (config) => JSON.stringify({ name: config.name, description: config.description,
    parallelism: config.parallelism, tasks: config.tasks, triggers: config.triggers }, null, 2);

  const showConfig = (config) => {
    sections.view.replaceChildren(h('h2', {}, `Version ${config.version}`),
      h('pre', { class: 'config', tabindex: 0 }, configText(config)));
    sections.view.scrollIntoView({ block: 'nearest' });
  };

  const showDiff = (from, to) => {
    const a = configText(configs.find((config) => config.version === from)).split('\n');
    const b = configText(configs.find((config) => config.version === to)).split('\n');
    sections.view.replaceChildren(h('h2', {}, `v${from} → v${to}`),
      h('pre', { class: 'config diff', tabindex: 0 }, lineDiff(a, b).map(([sign, line]) =>
        h('span', { class: sign === '+' ? 'add' : sign === '-' ? 'del' : '' }, `${sign} ${line}\n`))));
  };

  const loadRuns = async () => {
    try {
      const { runs } = await api(`${base}/runs?limit=5&reverse=true`);
      sections.runs.replaceChildren(h('h2', {}, 'Latest runs ', h('a', { href: pipelineHref(namespace, pipelineId, '/runs') }, 'all runs →')),
        runsTable(namespace, pipelineId, runs));
    } catch (error) {
      sections.runs.replaceChildren(h('h2', {}, 'Runs'), problem(error, 'the runs'));
    }
  };

  const startForm = () => {
    const rows = h('div', { class: 'vars' });
    const addRow = () => rows.append(h('div', { class: 'var' },
      h('input', { placeholder: 'NAME', 'aria-label': 'Variable name', class: 'var-key' }),
      h('input', { placeholder: 'value', 'aria-label': 'Variable value', class: 'var-value' })));
    addRow();
    const start = h('button', { class: 'primary', id: 'start-run', onclick: (event) => act(event.target, async () => {
      const variables = {};
      for (const row of rows.children) {
        const key = row.querySelector('.var-key').value.trim();
        if (key) variables[key] = row.querySelector('.var-value').value;
      }
      const { run } = await api(`${base}/runs`, { method: 'POST', body: { variables } });
      location.hash = pipelineHref(namespace, pipelineId, `/runs/${run.run_id}`);
    }) }, 'Start run');
    sections.run.replaceChildren(h('h2', {}, 'Start a run'), rows,
      h('div', { class: 'row' }, h('button', { onclick: addRow }, 'Add variable'), start));
  };

  const loadDeployments = async () => {
    try {
      const { deployments } = await api(`${base}/deployments?limit=10&reverse=true`);
      const running = deployments.find((deployment) => deployment.state === 'Running');
      sections.deployments.replaceChildren(h('h2', {}, 'Deployments'),
        running ? deploymentPanel(base, running, loadDeployments) : null,
        h('div', { class: 'scroll' }, h('table', {},
          h('thead', {}, h('tr', {}, ['id', 'kind', 'versions', 'weight', 'started', 'state', 'status'].map((name) => h('th', {}, name)))),
          h('tbody', {}, deployments.map((deployment) => h('tr', {},
            h('td', {}, deployment.deployment_id), h('td', {}, deployment.kind || 'switch'),
            h('td', {}, `v${deployment.start_version} → v${deployment.end_version}`),
            h('td', {}, deployment.rollout ? `${deployment.rollout.weight}%` : ''),
            h('td', {}, ago(deployment.started)), h('td', {}, badge(deployment.state)),
            h('td', {}, badge(deployment.status), deployment.status_reason ? h('div', { class: 'muted' }, deployment.status_reason.description) : null)))))));
    } catch (error) {
      sections.deployments.replaceChildren(h('h2', {}, 'Deployments'), problem(error, 'the deployments'));
    }
  };

  const loadNamed = async (section, title, path, key, describe) => {
    try {
      const body = await api(path);
      const items = body[key];
      section.replaceChildren(h('h2', {}, title), items.length
        ? h('ul', {}, items.map((item) => h('li', {}, describe(item))))
        : h('p', { class: 'muted' }, 'None'));
    } catch (error) {
      section.replaceChildren(h('h2', {}, title), problem(error, title.toLowerCase()));
    }
  };

  const loadSubscriptions = () => loadNamed(sections.subscriptions, 'Subscriptions', `${base}/subscriptions?limit=100`, 'subscriptions',
    (subscription) => [h('code', {}, `${subscription.extension_id}:${subscription.subscription_id}`), ' ',
      badge(subscription.status), ' ', h('span', { class: 'muted' },
        Object.entries(subscription.settings || {}).map(([key, value]) => `${key}=${value}`).join(' ')),
      subscription.status_reason ? h('div', { class: 'muted' }, subscription.status_reason.description) : null]);

  if (!(await loadHead())) return;
  startForm();
  await Promise.all([loadRuns(), loadDeployments(), loadSubscriptions(),
    loadNamed(sections.secrets, 'Secrets (names only)', `${base}/secrets?limit=1000`, 'secrets', (secret) => h('code', {}, secret.key)),
    loadNamed(sections.objects, 'Objects (names only)', `${base}/objects?limit=1000`, 'objects', (object) => h('code', {}, object.key))]);
  const refreshRuns = throttled(loadRuns, 500);
  const refreshAll = throttled(() => Promise.all([loadHead(), loadDeployments(), loadSubscriptions()]), 800);
  context.onEvent((event) => {
    const [name, body] = eventParts(event);
    if (name === 'reconnected') return refreshAll();
    if (body.namespace_id !== namespace || body.pipeline_id !== pipelineId) return;
    if (name.endsWith('_run') || name.endsWith('_task_execution')) refreshRuns();
    else refreshAll();
    if (name === 'completed_run') loadDeployments();
  });
}

function deploymentPanel(base, deployment, reload) {
  const rollout = deployment.rollout || {};
  const path = `${base}/deployments/${deployment.deployment_id}`;
  const promote = h('button', { onclick: (event) => act(event.target, async () => {
    const body = deployment.kind === 'ab' ? { version: Number(prompt('The winner: which version becomes live?', deployment.end_version)) } : {};
    await api(`${path}/promote`, { method: 'POST', body });
    await reload();
  }) }, deployment.kind === 'ab' ? 'Promote a winner…' : 'Promote');
  const abort = h('button', { class: 'danger', onclick: (event) => act(event.target, async () => {
    await api(`${path}/abort`, { method: 'POST' });
    await reload();
  }) }, 'Abort');
  return h('div', { class: 'card', id: 'deployment-in-progress' },
    h('h3', {}, `${deployment.kind === 'ab' ? 'A/B test' : 'Canary'} in progress: v${deployment.start_version} → v${deployment.end_version}`),
    h('p', {}, `v${deployment.end_version} gets ${rollout.weight}% of new runs`,
      rollout.steps && rollout.steps.length ? ` (steps ${rollout.steps.join('% → ')}%)` : '',
      rollout.sticky_variable ? `, sticky by ${rollout.sticky_variable}` : ''),
    h('table', { class: 'tallies' },
      h('thead', {}, h('tr', {}, ['arm', 'version', 'runs', 'successful', 'failed'].map((name) => h('th', {}, name)))),
      h('tbody', {}, (rollout.tallies || []).map((tally) => h('tr', {},
        h('td', {}, tally.arm), h('td', {}, `v${tally.version}`), h('td', {}, tally.runs),
        h('td', {}, tally.successful), h('td', {}, tally.failed))))),
    h('p', { class: 'row' }, promote, abort));
}

/** A line diff (longest common subsequence): [sign, line] with sign '+', '-' or ' '. */
function lineDiff(a, b) {
  const n = a.length;
  const m = b.length;
  const lengths = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      lengths[i][j] = a[i] === b[j] ? lengths[i + 1][j + 1] + 1 : Math.max(lengths[i + 1][j], lengths[i][j + 1]);
    }
  }
  const out = [];
  let i = 0;
  let j = 0;
  while (i < n && j < m) {
    if (a[i] === b[j]) { out.push([' ', a[i]]); i++; j++; }
    else if (lengths[i + 1][j] >= lengths[i][j + 1]) out.push(['-', a[i++]]);
    else out.push(['+', b[j++]]);
  }
  while (i < n) out.push(['-', a[i++]]);
  while (j < m) out.push(['+', b[j++]]);
  return out;
}

// ---- runs ------------------------------------------------------------------------------------

function runsTable(namespace, pipelineId, runs) {
  if (!runs.length) return h('p', { class: 'muted' }, 'No runs yet.');
  return h('div', { class: 'scroll' }, h('table', { class: 'runs' },
    h('thead', {}, h('tr', {}, ['run', 'state', 'status', 'version', 'started by', 'started', 'duration'].map((name) => h('th', {}, name)))),
    h('tbody', {}, runs.map((run) => h('tr', { class: 'link', 'data-run': run.run_id, onclick: (event) => {
      if (event.target.tagName !== 'A') location.hash = pipelineHref(namespace, pipelineId, `/runs/${run.run_id}`);
    } },
    h('td', {}, h('a', { href: pipelineHref(namespace, pipelineId, `/runs/${run.run_id}`) }, `#${run.run_id}`)),
    h('td', {}, badge(run.state)), h('td', {}, badge(run.status)),
    h('td', {}, `v${run.pipeline_config_version}`, run.routing ? ` (${run.routing.arm})` : '',
      run.rerun_of ? h('div', { class: 'muted' }, `re-runs #${run.rerun_of}`) : null),
    h('td', {}, run.initiator ? run.initiator.user : ''),
    h('td', {}, ago(run.started)), h('td', {}, run.state === 'complete' ? duration(run.started, run.ended) : ''))))));
}

async function runsPage(main, context, namespace, pipelineId) {
  const base = `/namespaces/${enc(namespace)}/pipelines/${enc(pipelineId)}`;
  const limit = 25;
  const offset = Math.max(0, Number(context.params.get('offset')) || 0);
  const body = h('div');
  main.replaceChildren(h('div', { class: 'crumbs' }, h('a', { href: `#/ns/${enc(namespace)}` }, namespace), ' / ',
    h('a', { href: pipelineHref(namespace, pipelineId) }, pipelineId), ' /'), h('h1', {}, 'Runs'), body);
  const load = async () => {
    let runs;
    try {
      ({ runs } = await api(`${base}/runs?limit=${limit}&offset=${offset}&reverse=true`));
    } catch (error) {
      body.replaceChildren(problem(error, 'the runs'));
      return;
    }
    const pager = h('p', { class: 'row pager' },
      offset > 0 ? h('a', { href: pipelineHref(namespace, pipelineId, `/runs?offset=${Math.max(0, offset - limit)}`) }, '← newer') : null,
      h('span', { class: 'muted' }, runs.length ? `runs ${offset + 1}–${offset + runs.length}` : ''),
      runs.length === limit ? h('a', { href: pipelineHref(namespace, pipelineId, `/runs?offset=${offset + limit}`) }, 'older →') : null);
    body.replaceChildren(runsTable(namespace, pipelineId, runs), pager);
  };
  await load();
  const refresh = throttled(load, 500);
  context.onEvent((event) => {
    const [name, body2] = eventParts(event);
    if (name === 'reconnected' || (body2.namespace_id === namespace && body2.pipeline_id === pipelineId)) refresh();
  });
}

// ---- one run: the DAG, task details, live logs -----------------------------------------------

/** Layers for a DAG: each task one column right of its deepest parent. */
function layout(tasks) {
  const byId = new Map(tasks.map((task) => [task.id, task]));
  const layer = new Map();
  const depth = (id, seen = new Set()) => {
    if (layer.has(id)) return layer.get(id);
    if (seen.has(id)) return 0;
    seen.add(id);
    const parents = Object.keys((byId.get(id) || {}).depends_on || {}).filter((parent) => byId.has(parent));
    const value = parents.length ? 1 + Math.max(...parents.map((parent) => depth(parent, seen))) : 0;
    layer.set(id, value);
    return value;
  };
  const columns = [];
  for (const task of tasks) {
    const column = depth(task.id);
    (columns[column] = columns[column] || []).push(task.id);
  }
  const position = new Map();
  columns.forEach((ids, column) => ids.sort().forEach((id, row) => position.set(id, { column, row })));
  return { position, columns: columns.length, rows: Math.max(1, ...columns.map((ids) => (ids || []).length)) };
}

const NODE = { width: 170, height: 46, gapX: 80, gapY: 22, pad: 16 };

function taskStatus(execution) {
  if (!execution) return 'waiting';
  if (execution.state === 'complete') return execution.status;
  return execution.state;
}

function drawDag(tasks, executions, selected, onSelect) {
  const { position, columns, rows } = layout(tasks);
  const x = (id) => NODE.pad + position.get(id).column * (NODE.width + NODE.gapX);
  const y = (id) => NODE.pad + position.get(id).row * (NODE.height + NODE.gapY);
  const width = NODE.pad * 2 + columns * NODE.width + (columns - 1) * NODE.gapX;
  const height = NODE.pad * 2 + rows * NODE.height + (rows - 1) * NODE.gapY;
  const edges = [];
  for (const task of tasks) {
    for (const [parent, condition] of Object.entries(task.depends_on || {})) {
      if (!position.has(parent)) continue;
      const x1 = x(parent) + NODE.width;
      const y1 = y(parent) + NODE.height / 2;
      const x2 = x(task.id);
      const y2 = y(task.id) + NODE.height / 2;
      const middle = (x1 + x2) / 2;
      edges.push(svg('path', { class: 'edge', d: `M${x1},${y1} C${middle},${y1} ${middle},${y2} ${x2},${y2}`, 'marker-end': 'url(#arrow)' }));
      edges.push(svg('text', { class: 'edge-label', x: middle, y: (y1 + y2) / 2 - 4, 'text-anchor': 'middle' }, String(condition).toLowerCase()));
    }
  }
  const nodes = tasks.map((task) => {
    const execution = executions.get(task.id);
    const status = taskStatus(execution);
    const timing = execution && execution.started ? ` ${duration(execution.started, execution.state === 'complete' ? execution.ended : 0)}` : '';
    const node = svg('g', { class: `node s-${status}${task.id === selected ? ' on' : ''}`, tabindex: 0, role: 'button',
      'data-task': task.id, 'data-status': status, 'aria-label': `task ${task.id}: ${status}`,
      transform: `translate(${x(task.id)},${y(task.id)})`,
      onclick: () => onSelect(task.id),
      onkeydown: (event) => { if (event.key === 'Enter' || event.key === ' ') { event.preventDefault(); onSelect(task.id); } } },
    svg('rect', { width: NODE.width, height: NODE.height, rx: 6 }),
    svg('text', { x: 10, y: 18 }, task.id.length > 22 ? `${task.id.slice(0, 21)}…` : task.id),
    svg('text', { class: 'state', x: 10, y: 36 }, `${status}${timing}`));
    return node;
  });
  return svg('svg', { width, height, viewBox: `0 0 ${width} ${height}`, role: 'group', 'aria-label': 'Task graph' },
    svg('defs', {}, svg('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' },
      svg('path', { d: 'M0,0 L10,5 L0,10 z', fill: 'currentColor', class: 'muted' }))),
    edges, nodes);
}

/** ANSI SGR colours and bold into spans (as text, never HTML). */
function ansiLine(line) {
  const out = h('span', { class: 'ln' });
  const pattern = /\x1b\[([0-9;]*)m/g;
  let classes = [];
  let last = 0;
  let match;
  const push = (text) => {
    if (!text) return;
    out.append(classes.length ? h('span', { class: classes.join(' ') }, text) : text);
  };
  while ((match = pattern.exec(line))) {
    push(line.slice(last, match.index));
    last = pattern.lastIndex;
    for (const code of (match[1] || '0').split(';').map(Number)) {
      if (code === 0) classes = [];
      else if (code === 1) classes.push('a-b');
      else if (code >= 30 && code <= 37) classes = classes.filter((name) => !/^a-3/.test(name)).concat(`a-${code}`);
      else if (code >= 90 && code <= 97) classes = classes.filter((name) => !/^a-3/.test(name)).concat(`a-${code - 60}`);
      else if (code === 39) classes = classes.filter((name) => !/^a-3/.test(name));
    }
  }
  push(line.slice(last).replace(/\x1b\[[0-9;]*[A-Za-z]/g, ''));
  return out;
}

/** A log viewer: lines appended in batches once per frame, kept scrolled to the end while the
 * reader is at the end. */
function logView() {
  const element = h('div', { class: 'log', id: 'log', tabindex: 0, role: 'log', 'aria-live': 'off', 'aria-label': 'Task log' });
  let queue = [];
  let scheduled = false;
  const flush = () => {
    scheduled = false;
    const atEnd = element.scrollHeight - element.scrollTop - element.clientHeight < 40;
    const fragment = document.createDocumentFragment();
    const batch = queue.splice(0, 2000);
    for (const line of batch) fragment.append(ansiLine(line));
    element.append(fragment);
    if (atEnd) element.scrollTop = element.scrollHeight;
    if (queue.length) schedule();
  };
  const schedule = () => {
    if (!scheduled) {
      scheduled = true;
      requestAnimationFrame(flush);
    }
  };
  return {
    element,
    add(lines) {
      queue.push(...lines);
      schedule();
    },
    note(text) {
      element.append(h('span', { class: 'ln muted' }, text));
    },
  };
}

async function runPage(main, context, namespace, pipelineId, runId) {
  const base = `/namespaces/${enc(namespace)}/pipelines/${enc(pipelineId)}`;
  const runPath = `${base}/runs/${runId}`;
  const head = h('div');
  const dag = h('div', { class: 'dag', id: 'dag' });
  const panel = h('section', { id: 'task-panel' });
  main.replaceChildren(h('div', { class: 'crumbs' }, h('a', { href: `#/ns/${enc(namespace)}` }, namespace), ' / ',
    h('a', { href: pipelineHref(namespace, pipelineId) }, pipelineId), ' / ',
    h('a', { href: pipelineHref(namespace, pipelineId, '/runs') }, 'runs'), ' /'),
  head, h('div', { class: 'split' }, h('div', {}, dag), panel));

  let run;
  let tasks = [];
  let executions = new Map();
  let selected = context.params.get('task');
  let logSocket = null;
  let logFor = null;
  context.dispose.push(() => logSocket && logSocket.close());

  const { run: first } = await api(runPath);
  run = first;
  const { config } = await api(`${base}/configs/${run.pipeline_config_version}`).catch(() => ({ config: { tasks: [] } }));
  tasks = Object.values(config.tasks || {});

  const renderHead = () => {
    const actions = [];
    if (run.state !== 'complete') {
      actions.push(h('button', { class: 'danger', id: 'cancel-run', onclick: (event) => act(event.target, async () => {
        await api(runPath, { method: 'DELETE' });
      }) }, 'Cancel run'));
    } else {
      actions.push(h('button', { id: 'rerun', onclick: (event) => act(event.target, async () => {
        const { run: again } = await api(`${runPath}/rerun`, { method: 'POST', body: {} });
        location.hash = pipelineHref(namespace, pipelineId, `/runs/${again.run_id}`);
      }) }, 'Re-run'));
      if (run.status !== 'successful') {
        actions.push(h('button', { id: 'rerun-failed', onclick: (event) => act(event.target, async () => {
          const { run: again } = await api(`${runPath}/rerun`, { method: 'POST', body: { failed_only: true } });
          location.hash = pipelineHref(namespace, pipelineId, `/runs/${again.run_id}`);
        }) }, 'Re-run failed tasks'));
      }
    }
    head.replaceChildren(
      h('h1', {}, `Run #${run.run_id} `, badge(run.state), ' ', run.state === 'complete' ? badge(run.status) : null),
      h('dl', { class: 'kv' },
        h('dt', {}, 'version'), h('dd', {}, `v${run.pipeline_config_version}`,
          run.routing ? ` (${run.routing.arm}: ${run.routing.reason}, deployment ${run.routing.deployment_id})` : ''),
        h('dt', {}, 'started by'), h('dd', {}, run.initiator ? run.initiator.user : ''),
        h('dt', {}, 'started'), h('dd', {}, ago(run.started)),
        h('dt', {}, 'duration'), h('dd', { id: 'run-duration' }, duration(run.started, run.state === 'complete' ? run.ended : 0)),
        run.rerun_of ? [h('dt', {}, 're-runs'), h('dd', {}, h('a', { href: pipelineHref(namespace, pipelineId, `/runs/${run.rerun_of}`) }, `#${run.rerun_of}`))] : null,
        run.status_reason ? [h('dt', {}, 'reason'), h('dd', {}, run.status_reason.description)] : null),
      h('div', { class: 'row' }, actions));
  };

  const select = (taskId) => {
    selected = taskId;
    const params = new URLSearchParams(context.params);
    params.set('task', taskId);
    history.replaceState(null, '', `${pipelineHref(namespace, pipelineId, `/runs/${runId}`)}?${params}`);
    renderDag();
    renderPanel(true);
  };

  const renderDag = () => {
    const focused = document.activeElement && document.activeElement.dataset && document.activeElement.dataset.task;
    dag.replaceChildren(drawDag(tasks, executions, selected, select));
    if (focused) {
      const node = dag.querySelector(`[data-task="${CSS.escape(focused)}"]`);
      if (node) node.focus();
    }
  };

  const renderPanel = (reopenLog) => {
    if (!selected) {
      panel.replaceChildren(h('p', { class: 'muted' }, 'Select a task (click, or Tab and Enter) to see its details and live log.'));
      return;
    }
    const task = tasks.find((candidate) => candidate.id === selected) || {};
    const execution = executions.get(selected);
    const details = h('dl', { class: 'kv', id: 'task-details' },
      h('dt', {}, 'status'), h('dd', {}, badge(taskStatus(execution))),
      h('dt', {}, task.plugin ? 'plugin' : 'image'), h('dd', {}, h('code', {}, task.plugin || task.image || '')),
      execution ? [
        h('dt', {}, 'attempt'), h('dd', {}, execution.attempt || 1),
        h('dt', {}, 'exit code'), h('dd', { id: 'exit-code' }, execution.exit_code == null ? '' : execution.exit_code),
        h('dt', {}, 'started'), h('dd', {}, ago(execution.started)),
        h('dt', {}, 'duration'), h('dd', {}, execution.started ? duration(execution.started, execution.state === 'complete' ? execution.ended : 0) : ''),
        execution.status_reason ? [h('dt', {}, 'reason'), h('dd', {}, execution.status_reason.description)] : null,
      ] : null);
    const cancel = execution && execution.state !== 'complete'
      ? h('button', { class: 'danger', onclick: (event) => act(event.target, async () => {
        await api(`${runPath}/tasks/${enc(selected)}`, { method: 'DELETE' });
      }) }, 'Cancel task') : null;
    const existing = panel.querySelector('#log');
    panel.replaceChildren(h('h2', {}, `Task ${selected}`), details, h('div', { class: 'row' }, cancel), h('h2', {}, 'Log'));
    if (existing && logFor === selected && !reopenLog) {
      panel.append(existing);
    } else {
      openLog(execution);
    }
  };

  const openLog = (execution) => {
    if (logSocket) logSocket.close();
    logSocket = null;
    const view = logView();
    panel.append(view.element);
    logFor = selected;
    if (!execution || !execution.started) {
      logFor = execution && execution.state === 'complete' ? selected : null;
      view.note(execution && execution.state === 'complete' ? '(this task never started)' : '(waiting for the task to start)');
      return;
    }
    if (execution.logs_removed || execution.logs_expired) {
      view.note('(the logs were removed)');
      return;
    }
    const path = `${runPath}/tasks/${enc(selected)}/logs`;
    if (execution.state === 'complete') {
      api(path, { text: true }).then((text) => view.add(text.replace(/\n$/, '').split('\n')))
        .catch((error) => view.note(`(${error.message})`));
      return;
    }
    const ws = socket(path);
    logSocket = ws;
    ws.onmessage = (message) => view.add(String(message.data).replace(/\n$/, '').split('\n'));
    ws.onclose = (event) => {
      if (logSocket === ws && event.code !== 1000) view.note(`(log stream closed: ${event.reason || event.code})`);
    };
  };

  const loadTasks = async () => {
    const { task_executions: list } = await api(`${runPath}/tasks`);
    executions = new Map(list.map((execution) => [execution.task_id, execution]));
  };

  const load = async () => {
    ({ run } = await api(runPath));
    await loadTasks();
    renderHead();
    renderDag();
    const execution = executions.get(selected);
    // The log opens when the selected task starts.
    const needsLog = selected && execution && execution.started && logFor !== selected;
    renderPanel(needsLog);
  };
  await load();
  const refresh = throttled(load, 250);
  context.onEvent((event) => {
    const [name, body] = eventParts(event);
    if (name === 'reconnected') return refresh();
    if (body.namespace_id === namespace && body.pipeline_id === pipelineId && body.run_id === runId) refresh();
  });
  // Running durations tick.
  const ticker = setInterval(() => {
    if (run.state !== 'complete') {
      const cell = document.getElementById('run-duration');
      if (cell) cell.textContent = duration(run.started, 0);
      renderDag();
    }
  }, 1000);
  context.dispose.push(() => clearInterval(ticker));
}

// ---- plugins ---------------------------------------------------------------------------------

async function pluginsPage(main, context) {
  const body = h('div');
  main.replaceChildren(h('h1', {}, 'Plugins'), body);
  const load = async () => {
    let plugins;
    try {
      ({ plugins } = await api('/plugins'));
    } catch (error) {
      body.replaceChildren(problem(error, 'the plugins'));
      return;
    }
    const counts = await Promise.all(plugins.map((plugin) => plugin.kind === 'trigger'
      ? api(`/extensions/${enc(plugin.name)}/subscriptions?limit=1000`).then((found) => found.subscriptions.length).catch(() => '')
      : Promise.resolve('')));
    body.replaceChildren(h('div', { class: 'scroll' }, h('table', { id: 'plugins' },
      h('thead', {}, h('tr', {}, ['name', 'kind', 'runtime', 'version', 'source', 'status', 'subscriptions', 'process'].map((name) => h('th', {}, name)))),
      h('tbody', {}, plugins.map((plugin, index) => h('tr', { 'data-plugin': plugin.name, 'data-status': plugin.status },
        h('td', {}, h('strong', {}, plugin.name), plugin.description ? h('div', { class: 'muted' }, plugin.description) : null,
          plugin.error ? h('div', { class: 's-failed plugin-error' }, plugin.error) : null),
        h('td', {}, plugin.kind || ''), h('td', {}, plugin.runtime), h('td', {}, plugin.version || ''),
        h('td', {}, plugin.source), h('td', {}, badge(plugin.status)), h('td', {}, counts[index]),
        h('td', {}, plugin.pid ? `pid ${plugin.pid}` : '', plugin.restarts ? `, ${plugin.restarts} restarts` : '')))))));
  };
  await load();
  const refresh = throttled(load, 1000);
  context.onEvent((event) => {
    const [name] = eventParts(event);
    if (name === 'reconnected' || name.includes('subscription') || name.includes('plugin') || name.includes('extension')) refresh();
  });
  const timer = setInterval(refresh, 5000); // a process's pid and restarts change without events
  context.dispose.push(() => clearInterval(timer));
}

// ---- events ----------------------------------------------------------------------------------

async function eventsPage(main, context) {
  const filter = h('input', { type: 'search', placeholder: 'Filter events ( / )', 'aria-label': 'Filter events' });
  const list = h('div', { class: 'events', id: 'events', role: 'log', 'aria-live': 'polite' });
  main.replaceChildren(h('h1', {}, 'Events'), h('div', { class: 'row' }, filter), list);
  context.focusFilter = () => filter.focus();
  const line = (event) => {
    const [name, body] = eventParts(event);
    const where = [body.namespace_id, body.pipeline_id, body.run_id && `run ${body.run_id}`, body.task_execution_id || body.task_id]
      .filter(Boolean).join(' / ');
    const element = h('div', { class: 'ev', 'data-kind': name },
      h('span', { class: 'muted' }, new Date(event.emitted).toLocaleTimeString(), ' '), h('strong', {}, name), ' ', where, ' ',
      h('code', { class: 'muted' }, JSON.stringify(body)));
    element.dataset.search = `${name} ${JSON.stringify(body)}`.toLowerCase();
    element.hidden = !element.dataset.search.includes(filter.value.toLowerCase());
    return element;
  };
  filter.addEventListener('input', () => {
    const words = filter.value.toLowerCase();
    for (const element of list.children) element.hidden = !element.dataset.search.includes(words);
  });
  try {
    const { events } = await api('/events?reverse=true&limit=100');
    list.replaceChildren(...events.map(line));
  } catch (error) {
    list.replaceChildren(problem(error, 'the events'));
  }
  context.onEvent((event) => {
    const [name] = eventParts(event);
    if (name === 'reconnected') return;
    list.prepend(line(event));
    while (list.children.length > 1000) list.lastChild.remove();
  });
}

// ---- start -----------------------------------------------------------------------------------

document.addEventListener('keydown', (event) => {
  const typing = /^(INPUT|TEXTAREA|SELECT)$/.test(document.activeElement.tagName);
  if (event.key === '/' && !typing && page && page.focusFilter) {
    event.preventDefault();
    page.focusFilter();
  } else if (event.key === 'Escape' && typing) {
    document.activeElement.blur();
  }
});

async function start() {
  document.getElementById('namespace').addEventListener('change', (event) => {
    location.hash = `#/ns/${enc(event.target.value)}`;
  });
  window.addEventListener('hashchange', route);
  try {
    const { token } = await api('/tokens/whoami');
    session.who = token.user;
  } catch (error) {
    if (error.status === 404) {
      session.who = 'development mode';
    } else if (error.status === 401) {
      session.token = '';
      sessionStorage.removeItem(TOKEN_KEY);
      renderWho();
      signIn(session.token ? error.message : '');
      route();
      return;
    }
  }
  await afterSignIn();
  route();
}

start();
