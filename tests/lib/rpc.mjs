// rpc.mjs - a farebox RPC client for Node, written from proto/README.md alone:
// a DEALER socket, one msgpack map per frame, replies matched by id.
import { Dealer } from "zeromq";
import { encode, decode } from "@msgpack/msgpack";

export class RpcClient {
  /**
   * @param {string|string[]} endpoints  e.g. "tcp://127.0.0.1:7110" (DEALER spreads over several)
   * @param {object} [opts]
   * @param {{serverKey:string, publicKey:string, secretKey:string}} [opts.curve]  Z85 keys
   */
  constructor(endpoints, opts = {}) {
    // immediate: queue nothing for a replica that is not connected (proto/README.md, section 1)
    this.sock = new Dealer({ linger: 0, immediate: true, heartbeatInterval: 500, heartbeatTimeout: 1500 });
    if (opts.curve) {
      this.sock.curveServerKey = opts.curve.serverKey;
      this.sock.curvePublicKey = opts.curve.publicKey;
      this.sock.curveSecretKey = opts.curve.secretKey;
    }
    for (const ep of [].concat(endpoints)) this.sock.connect(ep);
    this.nextId = 1;
    this.pending = new Map();
    this.closed = false;
    this.loop = this.#receiveLoop();
  }

  async #receiveLoop() {
    try {
      for await (const frames of this.sock) {
        const reply = decode(frames[frames.length - 1]);
        const waiter = this.pending.get(reply.id);
        if (waiter) {
          this.pending.delete(reply.id);
          waiter.resolve(reply);
        } else if (this.onUnmatched) {
          this.onUnmatched(reply);
        }
      }
    } catch (e) {
      if (!this.closed) throw e;
    }
  }

  /** Calls a method; resolves with the reply map {v,id,status,code,message,replica,body}. */
  call(method, body = {}, { idem, trace, deadlineMs = 5000, timeoutMs } = {}) {
    const id = this.nextId++;
    const req = { v: 1, id, method };
    if (idem !== undefined) req.idem = idem;
    if (trace !== undefined) req.trace = trace;
    req.deadline_ms = deadlineMs;
    req.body = body;
    return this.sendRequest(req, timeoutMs ?? deadlineMs + 1000);
  }

  /** Sends an already-built request map (tests use it for malformed envelopes). */
  sendRequest(req, timeoutMs = 5000) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(req.id);
        reject(new Error(`no reply to ${req.method} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(req.id, {
        resolve: (r) => {
          clearTimeout(timer);
          resolve(r);
        },
      });
      // zeromq.js allows one send at a time on a socket: concurrent calls queue their sends
      const frame = Buffer.from(encode(req));
      this.sending = (this.sending ?? Promise.resolve()).then(() => this.sock.send(frame)).catch((e) => {
        clearTimeout(timer);
        this.pending.delete(req.id);
        reject(e);
      });
    });
  }

  /** Sends raw frames and waits for whatever comes back (or null after timeoutMs). */
  async raw(frames, timeoutMs = 2000) {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.onUnmatched = undefined;
        resolve(null);
      }, timeoutMs);
      this.onUnmatched = (reply) => {
        clearTimeout(timer);
        this.onUnmatched = undefined;
        resolve(reply);
      };
      this.sock.send(frames);
    });
  }

  close() {
    this.closed = true;
    this.sock.close();
  }
}
