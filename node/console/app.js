// Tether Web Console: session setup, signaling, WebRTC link to the robot, and driving.
'use strict';

const TOKEN_KEY = 'tether.operatorToken';
const CONTROL_HZ = 20;
const PING_MS = 20000;
const MAX_RECONNECTS = 5;

const $ = (id) => document.getElementById(id);
const ui = {
  form: $('signin'), token: $('token'), robot: $('robot'), start: $('start'),
  sessionId: $('session-id'), sessionRobot: $('session-robot'), timer: $('timer'),
  status: $('status'), end: $('end'), estop: $('estop'), rearm: $('rearm'), error: $('error'),
  banner: $('banner'), connState: $('conn-state'), video: $('video'),
  videoEmpty: $('video-empty'), command: $('command'),
  armed: $('state-armed'), cause: $('state-cause'),
  x: $('state-x'), y: $('state-y'), heading: $('state-heading'),
  pad: { up: $('pad-up'), down: $('pad-down'), left: $('pad-left'), right: $('pad-right') },
};

// Read by operators' tooling and by the automated test; mutated in place, never replaced.
const T = {
  framesDecoded: 0,
  state: 'signed-out', // 'signed-out' | 'connecting' | 'live' | 'ended'
  sessionId: null,
  lastCommand: null,
  commandsSent: 0,
};
window.tether = T;

let S = null; // the current session, see startSession()

// ---- drive input: keyboard and pad feed one set of held directions ----

const KEYS = {
  KeyW: 'up', ArrowUp: 'up', KeyS: 'down', ArrowDown: 'down',
  KeyA: 'left', ArrowLeft: 'left', KeyD: 'right', ArrowRight: 'right',
};
const KEYS_BY_CHAR = { w: 'up', s: 'down', a: 'left', d: 'right' };
const heldKeys = new Map(); // key code -> direction
const heldPad = new Set();  // directions pressed on the pad
// Assume focus until told otherwise: headless browsers may never send an initial 'focus'.
let focused = true;

function held(dir) {
  if (heldPad.has(dir)) return true;
  for (const d of heldKeys.values()) if (d === dir) return true;
  return false;
}

function drive() {
  return {
    linear: (held('up') ? 1 : 0) - (held('down') ? 1 : 0),
    angular: (held('left') ? 1 : 0) - (held('right') ? 1 : 0),
  };
}

function showHeld() {
  for (const [dir, btn] of Object.entries(ui.pad)) btn.classList.toggle('active', held(dir));
}

function releaseAll() {
  heldKeys.clear();
  heldPad.clear();
  showHeld();
}

function canDrive() {
  return !!S && !S.ended && S.authed;
}

function isTyping(target) {
  return target instanceof HTMLElement &&
    (target.isContentEditable || ['INPUT', 'TEXTAREA', 'SELECT'].includes(target.tagName));
}

window.addEventListener('keydown', (e) => {
  if (isTyping(e.target) || e.ctrlKey || e.metaKey || e.altKey) return;
  const dir = KEYS[e.code] || KEYS_BY_CHAR[(e.key || '').toLowerCase()];
  if (!dir) return;
  if ((e.key || '').startsWith('Arrow')) e.preventDefault(); // no page scrolling while driving
  if (!canDrive()) return;
  heldKeys.set(e.code || e.key, dir);
  showHeld();
});

window.addEventListener('keyup', (e) => {
  if (heldKeys.delete(e.code || e.key)) showHeld();
});

window.addEventListener('blur', (e) => {
  if (e.target !== window) return;
  focused = false;
  releaseAll();
});
window.addEventListener('focus', (e) => {
  if (e.target === window) focused = true;
});
document.addEventListener('visibilitychange', () => {
  if (document.hidden) releaseAll();
});

for (const [dir, btn] of Object.entries(ui.pad)) {
  const press = (e) => {
    if (e.button !== undefined && e.button !== 0) return;
    e.preventDefault();
    if (!canDrive()) return;
    heldPad.add(dir);
    showHeld();
  };
  const release = () => {
    if (heldPad.delete(dir)) showHeld();
  };
  btn.addEventListener('pointerdown', press);
  btn.addEventListener('pointerup', release);
  btn.addEventListener('pointerleave', release);
  btn.addEventListener('pointercancel', release);
  btn.addEventListener('contextmenu', (e) => e.preventDefault()); // long-press on touch
}

// ---- small UI helpers ----

function setState(state) {
  T.state = state;
  document.body.dataset.state = state;
  ui.connState.textContent = state.replace('-', ' ');
}

function setStatus(text) {
  ui.status.textContent = text;
}

function showError(code, message) {
  ui.error.textContent = message ? `${code}: ${message}` : code;
  ui.error.hidden = false;
}

function clearError() {
  ui.error.textContent = '';
  ui.error.hidden = true;
}

function showBanner(kind, text) {
  ui.banner.className = kind;
  ui.banner.textContent = text;
  ui.banner.hidden = false;
}

function hideBanner() {
  ui.banner.className = '';
  ui.banner.textContent = '';
  ui.banner.hidden = true;
}

// Enables exactly what the session's phase allows.
function updateControls() {
  const active = !!S && !S.ended;
  const drivable = canDrive();
  ui.start.disabled = active;
  ui.token.disabled = active;
  ui.robot.disabled = active;
  ui.end.disabled = !active || !S.id || S.endingByUser;
  ui.estop.disabled = !active || !S.id;
  ui.rearm.disabled = !active || !S.id || !S.estopped;
  for (const btn of Object.values(ui.pad)) btn.disabled = !drivable;
  if (!drivable) releaseAll();
}

function pad2(n) {
  return String(n).padStart(2, '0');
}

function showTimer() {
  if (!S || !S.startedAt) return;
  const secs = Math.floor((performance.now() - S.startedAt) / 1000);
  ui.timer.textContent = `${pad2(Math.floor(secs / 60))}:${pad2(secs % 60)}`;
}

function fmt(v) {
  return typeof v === 'number' && Number.isFinite(v) ? v.toFixed(2) : '—';
}

function showRobotState(m) {
  ui.armed.textContent = m.armed ? 'yes' : 'no';
  ui.armed.className = m.armed ? 'ok' : 'warn';
  ui.cause.textContent = m.cause ?? '—';
  ui.x.textContent = fmt(m.x);
  ui.y.textContent = fmt(m.y);
  ui.heading.textContent = fmt(m.heading);
}

function clearRobotState() {
  for (const el of [ui.armed, ui.cause, ui.x, ui.y, ui.heading]) {
    el.textContent = '—';
    el.className = '';
  }
}

// ---- HTTP API ----

async function api(method, path, token, body) {
  const headers = { Authorization: `Bearer ${token}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch(path, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    throw Object.assign(new Error(`cannot reach the gateway (${err.message})`), { code: 'network' });
  }
  let data = null;
  try {
    data = await res.json();
  } catch {
    // not JSON: fall back to the HTTP status below
  }
  if (!res.ok) {
    const code = (data && data.code) || `http_${res.status}`;
    throw Object.assign(new Error((data && data.message) || res.statusText), { code });
  }
  return data;
}

// ---- session lifecycle ----

async function startSession() {
  clearError();
  hideBanner();
  const opToken = ui.token.value.trim();
  const robot = ui.robot.value.trim();
  if (!opToken || !robot) {
    showError('invalid_request', 'an operator token and a robot id are required');
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, opToken);

  const s = {
    id: null, token: null, opToken, robot, startedAt: 0, ended: false,
    ws: null, pc: null, control: null, channel: null, authed: false,
    joined: false, everJoined: false, reconnects: 0, endingByUser: false,
    seq: 0, timers: [], pingTimer: 0, joinRetries: 0,
    rvfcFrames: 0, qualityFrames: 0, qualityDone: 0, qualityBase: 0,
    queue: Promise.resolve(), // signaling steps that must not interleave (SDP, candidates)
  };
  S = s;
  T.framesDecoded = 0;
  T.sessionId = null;
  T.lastCommand = null;
  T.commandsSent = 0;
  clearRobotState();
  ui.command.textContent = '—';
  ui.sessionId.textContent = '—';
  ui.sessionRobot.textContent = robot;
  ui.timer.textContent = '00:00';
  setState('connecting');
  setStatus('creating session…');
  updateControls();

  let created;
  try {
    created = await api('POST', '/v1/sessions', opToken, { robot_id: robot });
  } catch (err) {
    s.ended = true;
    showError(err.code, err.message);
    setStatus('not started');
    setState('signed-out');
    updateControls();
    return;
  }
  if (S !== s) return;

  s.id = created.session_id;
  s.token = created.token;
  s.startedAt = performance.now();
  T.sessionId = s.id;
  ui.sessionId.textContent = s.id;
  ui.sessionId.title = created.expires_at ? `token expires ${created.expires_at}` : '';
  showTimer();
  s.timers.push(setInterval(showTimer, 1000));
  s.timers.push(setInterval(() => controlTick(s), 1000 / CONTROL_HZ));
  s.timers.push(setInterval(() => pollFrames(s), 500));
  updateControls();
  connectSignal(s);
}

// Ends the session locally, once. kind 'revoked' / 'terminated' shows the banner.
function endSession(kind, reason) {
  const s = S;
  if (!s || s.ended) return;
  s.ended = true;
  s.authed = false;
  updateControls(); // drive controls off first
  for (const t of s.timers) clearInterval(t);
  clearInterval(s.pingTimer);
  clearTimeout(s.reauthTimer);
  if (kind === 'revoked') showBanner('revoked', `Session revoked: ${reason}`);
  else if (kind === 'terminated') showBanner('terminated', `Session terminated: ${reason}`);
  else if (reason) showError('session_ended', reason);
  closePeer(s);
  if (s.ws) {
    try { s.ws.close(1000); } catch { /* already closed */ }
  }
  showTimer();
  setStatus(kind ? `${kind}: ${reason}` : 'ended');
  setState('ended');
  updateControls();
}

async function endByUser() {
  const s = S;
  if (!s || s.ended || !s.id) return;
  s.endingByUser = true; // a 'terminated' frame may well arrive before the DELETE answers
  updateControls();
  try {
    await api('DELETE', `/v1/sessions/${encodeURIComponent(s.id)}`, s.opToken);
  } catch (err) {
    if (err.code !== 'session_already_terminated' && err.code !== 'session_not_found') {
      showError(err.code, err.message);
      s.endingByUser = false;
      updateControls();
      return;
    }
  }
  if (S === s) endSession('terminated', 'ended by you');
}

function endReason(s, kind, reason) {
  if (kind === 'terminated' && s.endingByUser) return 'ended by you';
  return reason || kind;
}

function estop() {
  const s = S;
  releaseAll();
  if (!s || s.ended) return;
  if (s.channel && s.channel.readyState === 'open') {
    s.channel.send(JSON.stringify({ type: 'estop' }));
    s.estopped = true;
    updateControls();
    setStatus('e-stop sent: the robot stays stopped until you re-arm it');
  } else {
    showError('estop_failed', 'the session channel to the robot is not open');
  }
}

// The robot latches an e-stop; only an explicit re-arm from this console's authenticated
// channel lets it move again.
function rearm() {
  const s = S;
  if (!s || s.ended || !s.channel || s.channel.readyState !== 'open') return;
  s.channel.send(JSON.stringify({ type: 'rearm' }));
  s.estopped = false;
  updateControls();
  setStatus('re-armed');
}

// ---- signaling ----

function signalUrl() {
  return `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/v1/signal`;
}

function sendSignal(s, frame) {
  if (s.ws && s.ws.readyState === WebSocket.OPEN) s.ws.send(JSON.stringify(frame));
}

function connectSignal(s) {
  const ws = new WebSocket(signalUrl());
  s.ws = ws;
  s.joined = false;
  s.signalAuthed = false;
  setStatus('connecting to signaling…');
  ws.onopen = () => {
    if (s.ws === ws) sendSignal(s, { type: 'auth', token: s.token });
  };
  ws.onmessage = (ev) => {
    if (s.ws !== ws || s.ended) return;
    let f;
    try {
      f = JSON.parse(ev.data);
    } catch {
      return;
    }
    onSignal(s, f);
  };
  ws.onclose = (ev) => onSignalClose(s, ws, ev);
}

function onSignal(s, f) {
  switch (f.type) {
    case 'auth_ok':
      // The connection closes when the token expires (4004): refresh it and re-authenticate
      // on the live socket at two thirds of its lifetime.
      clearTimeout(s.reauthTimer);
      if (f.expires_in_ms) s.reauthTimer = setTimeout(() => reauthenticate(s), f.expires_in_ms * 2 / 3);
      if (s.signalAuthed) break; // a re-authentication: already joined
      s.signalAuthed = true;
      sendSignal(s, { type: 'join', session_id: s.id });
      clearInterval(s.pingTimer);
      s.pingTimer = setInterval(() => sendSignal(s, { type: 'ping' }), PING_MS);
      setStatus('joining…');
      break;
    case 'joined':
      s.joined = true;
      s.everJoined = true;
      s.reconnects = 0;
      s.joinRetries = 0;
      if (f.peer_present) {
        // After a signaling reconnect, a working link needs no new offer.
        if (!peerAlive(s)) startPeer(s);
      } else {
        setStatus('waiting for the robot…');
      }
      break;
    case 'peer_joined':
      // The robot (re)joined and waits for an offer: negotiate afresh.
      startPeer(s);
      break;
    case 'peer_left':
      setStatus('robot left; waiting for it…');
      break;
    case 'answer': {
      const pc = s.pc;
      if (!pc) break;
      enqueue(s, pc, () => pc.setRemoteDescription({ type: 'answer', sdp: f.sdp }));
      break;
    }
    case 'candidate': {
      const pc = s.pc;
      if (!pc || !f.candidate) break; // empty: end of candidates
      const init = { candidate: f.candidate };
      if (f.sdp_mid != null) init.sdpMid = f.sdp_mid;
      if (f.sdp_mline_index != null) init.sdpMLineIndex = f.sdp_mline_index;
      if (init.sdpMid === undefined && init.sdpMLineIndex === undefined) init.sdpMLineIndex = 0;
      enqueue(s, pc, () => pc.addIceCandidate(init));
      break;
    }
    case 'revoked':
    case 'terminated':
      endSession(f.type, endReason(s, f.type, f.reason));
      break;
    case 'error':
      onSignalError(s, f);
      break;
    default:
      // lease, pong, session_assigned, offer (we are the offerer): nothing to do
      break;
  }
}

function onSignalError(s, f) {
  showError(f.code, f.message);
  if (f.code === 'session_revoked') return endSession('revoked', f.message || f.code);
  if (f.code === 'session_terminated') return endSession('terminated', endReason(s, 'terminated', f.message));
  if (s.joined) return; // a refused frame; the connection stays
  if (f.code === 'unavailable' && s.joinRetries < 5) {
    // The node could not confirm with a quorum; it fails closed, so ask again shortly.
    s.joinRetries += 1;
    setStatus('gateway unavailable; retrying join…');
    setTimeout(() => {
      if (!s.ended && !s.joined) sendSignal(s, { type: 'join', session_id: s.id });
    }, 1000 * s.joinRetries);
    return;
  }
  if (f.code === 'rate_limited') return;
  endSession(null, `could not join: ${f.code}`);
}

async function reauthenticate(s) {
  if (s.ended) return;
  try {
    const fresh = await api('POST', `/v1/sessions/${encodeURIComponent(s.id)}/refresh`, s.opToken);
    if (fresh && fresh.token) {
      s.token = fresh.token;
      sendSignal(s, { type: 'auth', token: s.token });
      // The robot also stops at the session token's expiry: extend it on the session channel.
      if (s.channel && s.channel.readyState === 'open') s.channel.send(JSON.stringify({ type: 'auth', token: s.token }));
    }
  } catch (err) {
    if (err.code === 'session_already_terminated') return endSession('terminated', endReason(s, 'terminated', 'client_request'));
    // Otherwise the socket closes at expiry and the reconnect path refreshes again.
  }
}

async function onSignalClose(s, ws, ev) {
  if (s.ws !== ws) return;
  clearInterval(s.pingTimer);
  if (s.ended) return;
  switch (ev.code) {
    case 4001: return endSession('revoked', ev.reason || 'revoked');
    case 4002: return endSession('terminated', endReason(s, 'terminated', ev.reason || 'client_request'));
    case 4003: return endSession(null, 'this session was joined from another console');
    case 4005: return endSession('revoked', ev.reason || 'credential revoked');
    case 4401: case 4408: return endSession(null, `signaling refused the session token (${ev.code})`);
    default: break;
  }
  // Lost signaling does not break an established peer link; reconnect to hear revocations.
  if (s.reconnects >= MAX_RECONNECTS) {
    if (!s.everJoined) return endSession(null, `could not connect to signaling (${ev.code})`);
    showError('signaling_lost', `signaling closed (${ev.code}); gave up reconnecting`);
    setStatus('signaling lost');
    return;
  }
  s.reconnects += 1;
  const delay = Math.min(8000, 500 * 2 ** s.reconnects);
  setStatus(`signaling closed (${ev.code}); reconnecting…`);
  await new Promise((r) => setTimeout(r, delay));
  if (s.ended || S !== s) return;
  try {
    // The session token is short-lived; a reconnect needs a fresh one.
    const fresh = await api('POST', `/v1/sessions/${encodeURIComponent(s.id)}/refresh`, s.opToken);
    if (fresh && fresh.token) s.token = fresh.token;
  } catch (err) {
    if (err.code === 'session_already_terminated') return endSession('terminated', endReason(s, 'terminated', 'client_request'));
    // otherwise try with the token we have
  }
  if (!s.ended && S === s) connectSignal(s);
}

// Runs signaling steps in arrival order: an answer must be set before its candidates.
function enqueue(s, pc, step) {
  s.queue = s.queue.then(step).catch((err) => {
    if (!s.ended && s.pc === pc) showError('webrtc', err.message); // a replaced pc's errors are moot
  });
}

// ---- WebRTC ----

function peerAlive(s) {
  return !!s.pc && !['failed', 'closed'].includes(s.pc.connectionState);
}

function closePeer(s) {
  for (const ch of [s.control, s.channel]) {
    if (ch) try { ch.close(); } catch { /* already closed */ }
  }
  if (s.pc) try { s.pc.close(); } catch { /* already closed */ }
  s.pc = s.control = s.channel = null;
  s.authed = false;
  ui.video.srcObject = null;
  ui.videoEmpty.hidden = false;
}

function startPeer(s) {
  closePeer(s);
  updateControls();
  if (T.state === 'live') setState('connecting');
  setStatus('negotiating with the robot…');

  const pc = new RTCPeerConnection({ iceServers: [] });
  const control = pc.createDataChannel('control', { ordered: false, maxRetransmits: 0 });
  const channel = pc.createDataChannel('session');
  pc.addTransceiver('video', { direction: 'recvonly' });
  s.pc = pc;
  s.control = control;
  s.channel = channel;

  let offerSent = false;
  const early = []; // candidates gathered before the offer went out
  const sendCandidate = (c) => sendSignal(s, {
    type: 'candidate', candidate: c.candidate, sdp_mid: c.sdpMid, sdp_mline_index: c.sdpMLineIndex,
  });
  pc.onicecandidate = (e) => {
    if (s.pc !== pc || !e.candidate || !e.candidate.candidate) return;
    if (offerSent) sendCandidate(e.candidate);
    else early.push(e.candidate);
  };
  pc.ontrack = (e) => {
    if (s.pc !== pc) return;
    attachVideo(s, e.streams[0] || new MediaStream([e.track]));
  };
  pc.onconnectionstatechange = () => {
    if (s.pc !== pc || s.ended) return;
    const st = pc.connectionState;
    if (st === 'failed' || st === 'disconnected') setStatus(`link ${st}`);
    else if (st === 'connected' && !s.authed) setStatus('connected; authenticating…');
  };

  channel.onopen = () => {
    if (s.channel !== channel) return;
    // A (re)opened channel is a new authentication.
    channel.send(JSON.stringify({ type: 'auth', token: s.token }));
  };
  channel.onmessage = (e) => {
    if (s.channel === channel && !s.ended) onSessionMessage(s, e.data);
  };
  channel.onclose = () => {
    if (s.channel !== channel || s.ended) return;
    s.authed = false;
    setState('connecting');
    setStatus('session channel closed');
    updateControls();
  };

  enqueue(s, pc, async () => {
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    if (s.pc !== pc) return;
    sendSignal(s, { type: 'offer', sdp: pc.localDescription.sdp });
    offerSent = true;
    for (const c of early.splice(0)) sendCandidate(c);
  });
}

function onSessionMessage(s, data) {
  let m;
  try {
    m = JSON.parse(data);
  } catch {
    return;
  }
  switch (m.type) {
    case 'auth_ok':
      s.authed = true;
      setState('live');
      setStatus('live');
      updateControls();
      break;
    case 'auth_denied':
      s.authed = false;
      updateControls();
      showBanner('denied', `Robot refused the session: ${m.reason}`);
      setStatus(`robot refused: ${m.reason}`);
      break;
    case 'state':
      showRobotState(m);
      break;
    case 'revoked':
    case 'terminated':
      endSession(m.type, endReason(s, m.type, m.reason));
      break;
    default:
      break;
  }
}

// ---- control loop: 20 Hz while live and focused; silence otherwise (the robot then stops) ----

function controlTick(s) {
  if (S !== s || s.ended || !s.authed) return;
  if (!focused || document.hidden) return;
  const ch = s.control;
  if (!ch || ch.readyState !== 'open') return;
  if (ch.bufferedAmount > 16384) return; // a congested link: newer commands win anyway
  const { linear, angular } = drive();
  const cmd = { seq: s.seq + 1, linear, angular };
  try {
    ch.send(JSON.stringify(cmd));
  } catch {
    return;
  }
  s.seq = cmd.seq;
  T.lastCommand = cmd;
  T.commandsSent += 1;
  ui.command.textContent = `#${cmd.seq}  linear ${linear}  angular ${angular}`;
}

// ---- video and frame counting ----

// Two counters per session, each monotonic across re-negotiations; the larger one is shown.
function showFrames(s) {
  const n = Math.max(s.rvfcFrames, s.qualityFrames);
  if (S === s && n > T.framesDecoded) T.framesDecoded = n;
}

function attachVideo(s, stream) {
  const v = ui.video;
  if (v.srcObject === stream) return;
  v.srcObject = stream;
  ui.videoEmpty.hidden = true;
  // A new stream restarts the element's playback counters.
  s.qualityDone = s.qualityFrames;
  s.qualityBase = v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality().totalVideoFrames : 0;
  v.play().catch(() => { /* muted autoplay is allowed; 'autoplay' retries anyway */ });
  if (typeof v.requestVideoFrameCallback !== 'function') return;
  let last = null;
  const onFrame = (_now, meta) => {
    if (S !== s || s.ended || v.srcObject !== stream) return;
    // presentedFrames skips ahead when the page renders slower than the stream.
    s.rvfcFrames += last === null ? 1 : Math.max(1, meta.presentedFrames - last);
    last = meta.presentedFrames;
    showFrames(s);
    v.requestVideoFrameCallback(onFrame);
  };
  v.requestVideoFrameCallback(onFrame);
}

// Fallback for when frame callbacks do not run (e.g. the video is not being rendered).
function pollFrames(s) {
  const v = ui.video;
  if (S !== s || s.ended || !v.srcObject || !v.getVideoPlaybackQuality) return;
  const now = v.getVideoPlaybackQuality().totalVideoFrames - s.qualityBase;
  s.qualityFrames = Math.max(s.qualityFrames, s.qualityDone + Math.max(0, now));
  showFrames(s);
}

// ---- wiring ----

ui.form.addEventListener('submit', (e) => {
  e.preventDefault();
  if (!S || S.ended) startSession();
});
ui.end.addEventListener('click', endByUser);
ui.estop.addEventListener('click', estop);
ui.rearm.addEventListener('click', rearm);

(function prefill() {
  const params = new URLSearchParams(location.search);
  const token = params.get('token');
  const robot = params.get('robot');
  ui.token.value = token || sessionStorage.getItem(TOKEN_KEY) || '';
  if (robot) ui.robot.value = robot;
  if (token) {
    sessionStorage.setItem(TOKEN_KEY, token);
    // Keep the bearer token out of the address bar and history.
    params.delete('token');
    const q = params.toString();
    history.replaceState(null, '', location.pathname + (q ? `?${q}` : '') + location.hash);
  }
  setState('signed-out');
  updateControls();
})();
