// The timers of src/timer.rs, which explains them: this file ships as is, so keep it short.
const ticker = (send, t = {}) => ([id, ms]) => {
  clearTimeout(t[id]);
  t[id] = setTimeout(() => {
    delete t[id];
    send(id);
  }, ms);
};
// id -> { f, at: deadline, tick: the deadline a tick is asked for; 0: none }
const timers = new Map();
let last = 0;
let post;

const ask = (id, t, ms) => {
  t.tick = t.at;
  post([id, ms]);
};

const tick = (id) => {
  const t = timers.get(id);
  if (!t) return;
  t.tick = 0;
  if (!t.at) return;
  const ms = t.at - performance.now();
  if (ms > 0) ask(id, t, ms);
  else {
    t.at = 0;
    t.f();
  }
};

const start = () => {
  const here = ticker(tick);
  post = here;
  if (typeof window == "object" && typeof Worker == "function") {
    try {
      const w = new Worker(URL.createObjectURL(new Blob([`const k=(${ticker})(postMessage);onmessage=e=>k(e.data)`])));
      w.onmessage = (e) => tick(e.data);
      w.onerror = () => {
        post = here;
        for (const [id, t] of timers) if (t.at) ask(id, t, t.at - performance.now());
      };
      post = (data) => w.postMessage(data);
    } catch {}
  }
};

export function timer_new(f) {
  if (!post) start();
  timers.set(++last, { f, at: 0, tick: 0 });
  return last;
}

export function timer_arm(id, ms) {
  const t = timers.get(id);
  t.at = performance.now() + ms;
  if (!t.tick || t.at < t.tick) ask(id, t, ms);
}

export function timer_cancel(id) {
  timers.get(id).at = 0;
}

export function timer_drop(id) {
  timers.delete(id);
}
