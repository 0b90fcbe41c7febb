// stage studio, in the browser: the multitrack lanes and the gapless stream player.
//
// Our own code on the Web Audio API (no library, no CDN: the studio works offline). The page
// (stage.app.page) puts two kinds of element in gr.HTML components, each carrying a JSON spec in a
// data attribute (stage.app.multitrack):
//   [data-stage-multitrack]: the lanes of the current mix (the starting mix and each accepted stem,
//     each with the factor it has in the mix: stage.app.mixer.lane_factors) and the beat grid;
//   [data-stage-stream]: the take being generated, as WAVs of its new samples over the mix.
// A MutationObserver finds them whenever Gradio renders them.
//
// Lanes: every lane is decoded at the song's own sample rate (an AudioContext at that rate, so
// nothing is resampled) and started at the same context time with the same offset, so the lanes
// stay sample-locked; each goes through a GainNode set to its mix factor when heard and 0 when
// not (mute / solo as stage.app.mixer.audible). All lanes heard play exactly the current mix.
// Click a lane to play from there; space bar plays / pauses when the lanes have the focus.
//
// Stream: the spec lists every chunk of the take so far (a WAV of the take over the mix from a
// given sample on); each one not fetched yet is fetched and what it holds beyond the samples
// already scheduled is scheduled right after the previous piece (start time = first start +
// samples so far / rate), so the pieces play back to back with no gap. When the generator falls
// behind the player, the next piece starts as soon as it arrives (an underrun, counted).
//
// window.stageStudio exposes the players' state for tests and for the curious.
(() => {
  if (window.stageStudio) return;
  const S = (window.stageStudio = { multitrack: null, stream: null, contexts: {} });
  const COLORS = { wave: "#3465a4", beat: "#969696", downbeat: "#dc501e", head: "#111", muted: "#c8c8c8" };

  function context(rate) {
    // One AudioContext per sample rate, resumed by the next user gesture if the browser holds it.
    let ctx = S.contexts[rate];
    if (!ctx || ctx.state === "closed") ctx = S.contexts[rate] = new AudioContext({ sampleRate: rate, latencyHint: "playback" });
    return ctx;
  }
  const resumeAll = () => { for (const c of Object.values(S.contexts)) if (c.state === "suspended") c.resume(); };
  document.addEventListener("pointerdown", resumeAll, true);
  document.addEventListener("keydown", resumeAll, true);

  async function fetchBuffer(ctx, url) {
    const response = await fetch(url);
    if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
    return ctx.decodeAudioData(await response.arrayBuffer());
  }

  function audible(labels, muted, soloed) { // as stage.app.mixer.audible
    const heard = soloed.size ? labels.filter((x) => soloed.has(x)) : labels.slice();
    return heard.filter((x) => !muted.has(x));
  }

  function clock(t) {
    const m = Math.floor(t / 60), s = t - 60 * m;
    return `${m}:${s.toFixed(2).padStart(5, "0")}`;
  }

  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props)) {
      if (k === "class") node.className = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (k === "text") node.textContent = v;
      else node.setAttribute(k, v);
    }
    node.append(...children);
    return node;
  }

  class Multitrack {
    constructor(root, spec, key) {
      this.spec = spec; this.key = key;
      this.labels = spec.lanes.map((l) => l.label);
      this.muted = new Set(); this.soloed = new Set();
      this.buffers = []; this.sources = []; this.gains = [];
      this.playing = false; this.offset = 0; this.started = 0; this.loaded = false; this.error = null;
      this.duration = spec.samples / spec.rate;
      this.mount(root);
      this.ready = this.load();
    }

    mount(root) {
      // (Re)build the DOM in `root`: Gradio may render the same spec into a fresh element.
      this.root = root;
      root.dataset.stageBound = this.key;
      this.playButton = el("button", { class: "smt-play", type: "button", title: "play / pause (space)", onclick: () => this.toggle() }, "▶");
      const stop = el("button", { class: "smt-stop", type: "button", title: "stop", onclick: () => this.stop() }, "■");
      this.timeLabel = el("span", { class: "smt-time" }, `${clock(0)} / ${clock(this.duration)}`);
      this.status = el("span", { class: "smt-status" }, this.loaded ? "" : "loading the lanes…");
      const bar = el("div", { class: "smt-bar" }, this.playButton, stop, this.timeLabel, this.status);
      this.rows = this.spec.lanes.map((lane, i) => {
        const mute = el("button", { class: "smt-mute", type: "button", title: `mute ${lane.label}`, "aria-pressed": "false",
                                    onclick: () => this.setMuted(lane.label, !this.muted.has(lane.label)) }, "M");
        const solo = el("button", { class: "smt-solo", type: "button", title: `solo ${lane.label}`, "aria-pressed": "false",
                                    onclick: () => this.setSoloed(lane.label, !this.soloed.has(lane.label)) }, "S");
        const canvas = el("canvas", { class: "smt-wave", height: "72" });
        const head = el("div", { class: "smt-head" });
        const wave = el("div", { class: "smt-wavebox", title: "click to play from here",
                                 onclick: (e) => this.seek(this.duration * e.offsetX / wave.clientWidth, true) }, canvas, head);
        const name = el("div", { class: "smt-name" }, el("b", { text: lane.label }), el("small", { text: lane.caption || "" }));
        const row = el("div", { class: "smt-lane", "data-label": lane.label, "data-index": String(i) },
                       el("div", { class: "smt-controls" }, name, el("div", {}, mute, solo)), wave);
        return { row, mute, solo, canvas, head };
      });
      const grid = this.spec.grid ? `beat grid: ${this.spec.grid}` : "no beat grid (Track beats, or type a tempo)";
      root.replaceChildren(bar, ...this.rows.map((r) => r.row), el("div", { class: "smt-foot", text: grid }));
      root.tabIndex = 0;
      root.onkeydown = (e) => { if (e.code === "Space") { e.preventDefault(); this.toggle(); } };
      this.paintButtons();
      if (this.loaded) this.draw();
    }

    async load() {
      try {
        this.ctx = context(this.spec.rate);
        this.buffers = await Promise.all(this.spec.lanes.map((lane) => fetchBuffer(this.ctx, lane.url)));
        for (const [i, b] of this.buffers.entries())
          if (b.sampleRate !== this.spec.rate) throw new Error(`${this.labels[i]}: decoded at ${b.sampleRate} Hz, not ${this.spec.rate}`);
        this.loaded = true;
        this.status.textContent = "";
        this.draw();
      } catch (err) {
        this.error = String(err);
        this.status.textContent = `could not load the lanes: ${this.error}`;
      }
    }

    draw() {
      const heard = new Set(audible(this.labels, this.muted, this.soloed));
      this.rows.forEach((r, i) => {
        const canvas = r.canvas, width = Math.max(200, canvas.parentElement.clientWidth || 900);
        canvas.width = width;
        const g = canvas.getContext("2d"), h = canvas.height, mid = h / 2;
        g.clearRect(0, 0, width, h);
        const b = this.buffers[i];
        if (b) {
          const { lo, hi, peak } = this.envelope(i, width);
          const scale = (mid - 2) / Math.max(peak, 0.05);
          g.strokeStyle = heard.has(this.labels[i]) ? COLORS.wave : COLORS.muted;
          g.beginPath();
          for (let x = 0; x < width; x++) { g.moveTo(x + 0.5, mid - hi[x] * scale); g.lineTo(x + 0.5, mid - lo[x] * scale + 1); }
          g.stroke();
        }
        const px = (t) => Math.round(t / this.duration * (width - 1)) + 0.5;
        g.lineWidth = 1; g.strokeStyle = COLORS.beat; g.beginPath();
        for (const t of this.spec.beats || []) { g.moveTo(px(t), 0); g.lineTo(px(t), h); }
        g.stroke();
        g.lineWidth = 2; g.strokeStyle = COLORS.downbeat; g.beginPath();
        for (const t of this.spec.downbeats || []) { g.moveTo(px(t), 0); g.lineTo(px(t), h); }
        g.stroke();
      });
      this.drawHead();
    }

    envelope(i, width) {
      // The min / max of the lane's channel mean per pixel column (computed once per width).
      this.envelopes = this.envelopes || {};
      const cached = this.envelopes[i];
      if (cached && cached.width === width) return cached;
      const b = this.buffers[i];
      const chans = Array.from({ length: b.numberOfChannels }, (_, c) => b.getChannelData(c));
      let peak = 1e-6;
      const lo = new Float32Array(width), hi = new Float32Array(width);
      for (let x = 0; x < width; x++) {
        const a = Math.floor(x * b.length / width), e = Math.min(b.length, Math.max(a + 1, Math.floor((x + 1) * b.length / width)));
        let mn = Infinity, mx = -Infinity;
        for (let n = a; n < e; n++) {
          let v = 0;
          for (const ch of chans) v += ch[n];
          v /= chans.length;
          if (v < mn) mn = v;
          if (v > mx) mx = v;
        }
        lo[x] = mn === Infinity ? 0 : mn; hi[x] = mx === -Infinity ? 0 : mx;
        peak = Math.max(peak, Math.abs(lo[x]), Math.abs(hi[x]));
      }
      return (this.envelopes[i] = { width, lo, hi, peak });
    }

    position() {
      const t = this.playing ? this.offset + this.ctx.currentTime - this.started : this.offset;
      return Math.min(Math.max(t, 0), this.duration);
    }

    drawHead() {
      const t = this.position();
      for (const r of this.rows) r.head.style.left = `${(100 * t / this.duration).toFixed(3)}%`;
      this.timeLabel.textContent = `${clock(t)} / ${clock(this.duration)}`;
    }

    factor(label) { // the lane's factor in the mix when heard, else 0
      return audible(this.labels, this.muted, this.soloed).includes(label) ? this.spec.lanes[this.labels.indexOf(label)].factor : 0;
    }

    play() {
      if (this.playing || !this.loaded) return;
      if (this.offset >= this.duration) this.offset = 0;
      this.ctx.resume();
      const when = this.ctx.currentTime + 0.05; // every lane starts at this one instant: sample-locked
      this.sources = []; this.gains = [];
      this.buffers.forEach((b, i) => {
        const src = this.ctx.createBufferSource(), gain = this.ctx.createGain();
        src.buffer = b;
        gain.gain.value = this.factor(this.labels[i]);
        src.connect(gain).connect(this.ctx.destination);
        src.start(when, this.offset);
        this.sources.push(src); this.gains.push(gain);
      });
      this.started = when; this.playing = true;
      this.paintButtons();
      const tick = () => {
        if (!this.playing) return;
        if (this.position() >= this.duration) { this.pause(); this.offset = this.duration; this.drawHead(); return; }
        this.drawHead();
        requestAnimationFrame(tick);
      };
      requestAnimationFrame(tick);
    }

    pause() {
      if (!this.playing) return;
      this.offset = this.position();
      for (const s of this.sources) { try { s.stop(); } catch (e) { /* never started */ } s.disconnect(); }
      this.sources = []; this.gains = []; this.playing = false;
      this.paintButtons(); this.drawHead();
    }

    toggle() { this.playing ? this.pause() : this.play(); }
    stop() { this.pause(); this.offset = 0; this.drawHead(); }

    seek(t, play = false) {
      const was = this.playing;
      this.pause();
      this.offset = Math.min(Math.max(t, 0), this.duration);
      this.drawHead();
      if (was || play) this.play();
    }

    setMuted(label, on) { this.edit(this.muted, label, on); }
    setSoloed(label, on) { this.edit(this.soloed, label, on); }

    edit(set, label, on) {
      if (!this.labels.includes(label)) throw new Error(`no lane ${label}`);
      on ? set.add(label) : set.delete(label);
      const now = this.ctx ? this.ctx.currentTime : 0;
      this.gains.forEach((g, i) => g.gain.setValueAtTime(this.factor(this.labels[i]), now));
      this.paintButtons();
      if (this.loaded) this.draw();
    }

    paintButtons() {
      this.playButton.textContent = this.playing ? "❚❚" : "▶";
      this.rows.forEach((r, i) => {
        r.mute.setAttribute("aria-pressed", String(this.muted.has(this.labels[i])));
        r.solo.setAttribute("aria-pressed", String(this.soloed.has(this.labels[i])));
      });
    }

    selection() { return { muted: [...this.muted], soloed: [...this.soloed] }; }

    async renderMix() {
      // What the player plays with this mute / solo, rendered offline: [channels][samples].
      await this.ready;
      if (!this.loaded) throw new Error(this.error || "the lanes did not load");
      const channels = Math.max(...this.buffers.map((b) => b.numberOfChannels));
      const off = new OfflineAudioContext(channels, this.spec.samples, this.spec.rate);
      this.buffers.forEach((b, i) => {
        const src = off.createBufferSource(), gain = off.createGain();
        src.buffer = b; gain.gain.value = this.factor(this.labels[i]);
        src.connect(gain).connect(off.destination);
        src.start(0);
      });
      const out = await off.startRendering();
      return Array.from({ length: out.numberOfChannels }, (_, c) => Array.from(out.getChannelData(c)));
    }

    state() {
      return { key: this.key, loaded: this.loaded, error: this.error, labels: this.labels, playing: this.playing,
               position: this.position(), duration: this.duration, ...this.selection(),
               lengths: this.buffers.map((b) => b.length), rate: this.spec.rate };
    }

    close() { this.pause(); }
  }

  class StreamPlayer {
    constructor() { this.id = null; this.chain = Promise.resolve(); }

    reset(spec) {
      for (const s of this.sources || []) { try { s.stop(); } catch (e) { /* never started */ } }
      Object.assign(this, { id: spec.id, rate: spec.rate, ctx: context(spec.rate), have: 0, next: 0, t0: null, sources: [],
                            pieces: [], log: [], underruns: 0, done: false, error: null });
    }

    update(spec, root) {
      this.root = root;
      this.chain = this.chain.then(() => this.append(spec)).catch((err) => { this.error = String(err); this.show(); });
      return this.chain;
    }

    async append(spec) {
      // spec.chunks: every chunk of the take so far, in order, each a WAV from sample `start` on;
      // the ones not fetched yet are fetched, and what they hold beyond `have` is scheduled.
      if (spec.id !== this.id) this.reset(spec);
      for (; this.next < spec.chunks.length; this.next++) {
        const chunk = spec.chunks[this.next];
        if (chunk.start > this.have) throw new Error(`chunk ${this.next} starts at ${chunk.start}, after ${this.have}`);
        const buffer = await fetchBuffer(this.ctx, chunk.url);
        if (buffer.sampleRate !== this.rate) throw new Error(`decoded at ${buffer.sampleRate} Hz, not ${this.rate}`);
        this.schedule(buffer, this.have - chunk.start, chunk.url);
      }
      this.done = Boolean(spec.done);
      this.show();
    }

    schedule(buffer, from, url) {
      // Play buffer[from:] right after what is scheduled already.
      const n = buffer.length - from;
      if (n <= 0) return;
      const piece = this.ctx.createBuffer(buffer.numberOfChannels, n, this.rate);
      const data = [];
      for (let c = 0; c < buffer.numberOfChannels; c++) {
        const samples = buffer.getChannelData(c).slice(from);
        piece.copyToChannel(samples, c);
        data.push(samples);
      }
      const now = this.ctx.currentTime, start = this.have;
      if (this.t0 === null) this.t0 = now + 0.1;
      let when = this.t0 + start / this.rate; // right after the previous piece: no gap
      let underrun = false;
      if (when < now + 0.02) { // the player ran dry: go on as soon as possible
        underrun = true; this.underruns += 1;
        this.t0 += now + 0.05 - when; when = now + 0.05;
      }
      const src = this.ctx.createBufferSource();
      src.buffer = piece; src.connect(this.ctx.destination); src.start(when);
      this.sources.push(src); this.pieces.push(data);
      this.log.push({ start, end: start + n, when, underrun, url, from });
      this.have = start + n;
    }

    show() {
      if (!this.root || !this.root.isConnected) return;
      const buffered = (this.have || 0) / (this.rate || 1);
      const played = this.ctx && this.t0 !== null ? Math.min(buffered, Math.max(0, this.ctx.currentTime - this.t0)) : 0;
      const what = this.error ? `stream failed: ${this.error}` :
        `${this.done ? "generated" : "generating"} ${buffered.toFixed(1)} s, played ${played.toFixed(1)} s` +
        (this.underruns ? ` (${this.underruns} pause${this.underruns > 1 ? "s" : ""}: the model fell behind the player)` : "");
      const label = this.root.querySelector(".sst-status");
      if (label) label.textContent = what;
    }

    assembled() { // every piece joined: [channels][samples]
      if (!this.pieces || !this.pieces.length) return [];
      return this.pieces[0].map((_, c) => this.pieces.flatMap((p) => Array.from(p[c])));
    }

    state() {
      return { id: this.id, rate: this.rate, have: this.have, done: this.done, underruns: this.underruns, error: this.error,
               log: (this.log || []).map(({ start, end, when, underrun, url, from }) => ({ start, end, when, underrun, url, from })) };
    }
  }

  function bind() {
    for (const root of document.querySelectorAll("[data-stage-multitrack]")) {
      const key = root.getAttribute("data-stage-multitrack");
      if (root.dataset.stageBound === key) continue;
      const m = S.multitrack;
      if (m && m.key === key) { m.mount(root); continue; } // the same lanes, rendered again
      if (m) m.close();
      S.multitrack = new Multitrack(root, JSON.parse(key), key);
    }
    for (const root of document.querySelectorAll("[data-stage-stream]")) {
      const key = root.getAttribute("data-stage-stream");
      if (root.dataset.stageBound === key) continue;
      root.dataset.stageBound = key;
      S.stream = S.stream || new StreamPlayer();
      S.stream.update(JSON.parse(key), root);
    }
  }
  S.bind = bind;
  const start = () => {
    new MutationObserver(bind).observe(document.body, { childList: true, subtree: true, attributes: true,
                                                         attributeFilter: ["data-stage-multitrack", "data-stage-stream"] });
    bind();
  };
  document.readyState === "loading" ? document.addEventListener("DOMContentLoaded", start) : start();
})();
