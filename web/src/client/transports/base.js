/*
 * transports/base.js: what every transport keeps from its construction: the endpoint, the
 * options, the clock and the callbacks (never the client), and the two facts the client asks of
 * any transport: whether it is done and whether it proved its path.
 */

export class Transport {
  constructor(url, options, callbacks) {
    this.url = url;
    this.o = options;
    this.clock = options.clock;
    this.cb = callbacks;
    this.done = false; // stopped or reported closed: says nothing more
    this.opened = false; // the path is proven (each transport says by what)
  }
}
