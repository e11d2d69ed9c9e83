// How much of `weft control` one watch stream, and one client, may hold. The server only sends
// watch batches; what a client does not read piles up in the server's memory (grpc-js buffers
// every write it is given, without limit), so without these a few stalled or hostile clients
// could grow the control plane until the kernel kills it — taking every node's lease renewals
// with it.

/**
 * Lease events (a snapshot's leases count one each) a single watch stream may have waiting in
 * the server: handed to grpc-js but not yet flushed to HTTP/2, plus queued behind a write that
 * said "wait for 'drain'". A daemon applies a batch in microseconds, so it only gets near this
 * when it stopped reading (a stopped process, a link that is down but whose keepalive has not
 * expired yet) — or when it never meant to read. A wire lease is ~200 bytes, so 1024 of them is
 * ~200 KB per stream: 100 stalled streams cost ~20 MB, not the unbounded growth they caused
 * before. It is still far above any burst a live daemon sees between two reads (a sweep of
 * expired leases arrives as one batch, and the first batch of a stream, which may be a whole
 * snapshot, is never held back by this limit). A stream past it is ended with
 * RESOURCE_EXHAUSTED; the client resumes from the revision it last applied, and the registry's
 * event log (DEFAULT_EVENT_LOG_SIZE, 10,000 events) still holds what it missed, so it catches up
 * with one delta rather than a full snapshot.
 */
export const WATCH_MAX_QUEUED_EVENTS = 1024;

/**
 * Watch streams one client may hold open at once. The client is its certificate under mTLS,
 * else its IP address. A daemon holds one, and briefly two while a cut-off or broken stream is
 * being torn down as its replacement opens; 8 leaves room for a few operator tools watching from
 * the same host. Several nodes behind one NAT address without
 * mTLS share the limit: raise it with `weft control --max-watches-per-client`.
 */
export const DEFAULT_MAX_WATCHES_PER_CLIENT = 8;
