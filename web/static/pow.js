// Proof-of-work for sign-ups: find a decimal counter such that SHA-256(token + counter) starts
// with `bits` zero bits (the server's 429 `challenge_required`). Plain SHA-256 in JavaScript
// (crypto.subtle costs a promise per hash and is missing outside secure contexts); the search
// runs in a Web Worker (pow-worker.js) so the page stays responsive, or here in slices when
// workers are unavailable.

const K = new Uint32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);
const INIT = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
  0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];
const W = new Uint32Array(64);

/** Run the compression function over the 64-byte block at `bytes[off]`, updating `h`. */
function compress(h, bytes, off) {
  for (let i = 0; i < 16; i++) {
    const j = off + i * 4;
    W[i] = (bytes[j] << 24) | (bytes[j + 1] << 16) | (bytes[j + 2] << 8) | bytes[j + 3];
  }
  for (let i = 16; i < 64; i++) {
    const a = W[i - 15], b = W[i - 2];
    const s0 = ((a >>> 7) | (a << 25)) ^ ((a >>> 18) | (a << 14)) ^ (a >>> 3);
    const s1 = ((b >>> 17) | (b << 15)) ^ ((b >>> 19) | (b << 13)) ^ (b >>> 10);
    W[i] = (W[i - 16] + s0 + W[i - 7] + s1) | 0;
  }
  let [a, b, c, d, e, f, g, hh] = h;
  for (let i = 0; i < 64; i++) {
    const S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
    const t1 = (hh + S1 + ((e & f) ^ (~e & g)) + K[i] + W[i]) | 0;
    const S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
    const t2 = (S0 + ((a & b) ^ (a & c) ^ (b & c))) | 0;
    hh = g; g = f; f = e; e = (d + t1) | 0; d = c; c = b; b = a; a = (t1 + t2) | 0;
  }
  h[0] = (h[0] + a) | 0; h[1] = (h[1] + b) | 0; h[2] = (h[2] + c) | 0; h[3] = (h[3] + d) | 0;
  h[4] = (h[4] + e) | 0; h[5] = (h[5] + f) | 0; h[6] = (h[6] + g) | 0; h[7] = (h[7] + hh) | 0;
}

function ascii(text) {
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i) & 0xff;
  return bytes;
}

/** SHA-256 of an ASCII string, as 8 32-bit words (for tests: compare with a known digest). */
export function sha256Words(text) {
  return digestFrom(INIT, ascii(text), 0, text.length);
}

/** Finish a hash whose first `done` bytes are already in `state`; `tail` holds the rest. */
function digestFrom(state, tail, done, total) {
  const h = state.slice();
  const padded = new Uint8Array(Math.ceil((tail.length + 9) / 64) * 64);
  padded.set(tail);
  padded[tail.length] = 0x80;
  const bits = total * 8;
  const end = padded.length;
  padded[end - 4] = (bits >>> 24) & 0xff;
  padded[end - 3] = (bits >>> 16) & 0xff;
  padded[end - 2] = (bits >>> 8) & 0xff;
  padded[end - 1] = bits & 0xff;
  padded[end - 5] = Math.floor(bits / 2 ** 32) & 0xff;
  for (let off = 0; off < end; off += 64) compress(h, padded, off);
  return h;
}

function leadingZeroBits(words) {
  let count = 0;
  for (const word of words) {
    if (word === 0) { count += 32; continue; }
    return count + Math.clz32(word);
  }
  return count;
}

/**
 * Look for a solving counter among `count` counters from `start`: the counter as a string,
 * or null. The token's whole 64-byte blocks are hashed once, not once per counter.
 */
export function search(token, bits, start, count) {
  const bytes = ascii(token);
  const full = Math.floor(bytes.length / 64) * 64;
  const mid = INIT.slice();
  for (let off = 0; off < full; off += 64) compress(mid, bytes, off);
  const rest = bytes.subarray(full);
  for (let n = start; n < start + count; n++) {
    const counter = String(n);
    const tail = new Uint8Array(rest.length + counter.length);
    tail.set(rest);
    for (let i = 0; i < counter.length; i++) tail[rest.length + i] = counter.charCodeAt(i);
    if (leadingZeroBits(digestFrom(mid, tail, full, bytes.length + counter.length)) >= bits) {
      return counter;
    }
  }
  return null;
}

const SLICE = 20000;

/** Solve on this thread, yielding to the page between slices. */
async function solveHere(token, bits) {
  for (let start = 0; ; start += SLICE) {
    const found = search(token, bits, start, SLICE);
    if (found !== null) return found;
    await new Promise((resolve) => setTimeout(resolve, 0));
  }
}

/**
 * The counter that solves `challenge` ({token, bits}, from a 429 `challenge_required`).
 * About 2^bits hashes: a fraction of a second at the usual 14 bits.
 */
export async function solveChallenge(challenge) {
  const { token, bits } = challenge;
  if (typeof Worker === "function") {
    try {
      return await new Promise((resolve, reject) => {
        const worker = new Worker(new URL("./pow-worker.js", import.meta.url), { type: "module" });
        worker.onmessage = (ev) => { worker.terminate(); resolve(ev.data.counter); };
        worker.onerror = (ev) => { worker.terminate(); reject(ev); };
        worker.postMessage({ token, bits });
      });
    } catch {
      /* no module workers here: solve on this thread */
    }
  }
  return solveHere(token, bits);
}
