// Web Worker: solve one sign-up challenge ({token, bits}) off the page's thread (see pow.js).

import { search } from "./pow.js";

self.onmessage = (ev) => {
  const { token, bits } = ev.data;
  for (let start = 0; ; start += 100000) {
    const counter = search(token, bits, start, 100000);
    if (counter !== null) {
      self.postMessage({ counter });
      return;
    }
  }
};
