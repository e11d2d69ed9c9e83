// weft's native addon: the kernel interfaces Node lacks, and nothing else.
//
// Every entry point moves a *batch* of packets between one file descriptor and a caller-owned
// slab (a Buffer cut into fixed-size slots, packet i at i*slotSize + headroom). Routing,
// parsing and every other decision stay in TypeScript; there is no per-packet JS<->C++ call.
//
// Layout, so later kernel features slot in beside what is here:
//   - argument checking (Args*): everything a caller passes is bounds-checked before the first
//     syscall, so a bad offset throws a TypeError/RangeError instead of touching memory;
//   - scratch (Scratch, OffloadScratch, UdpScratch): per-environment mmsghdr/iovec/sockaddr/
//     plan arrays, grown only when a larger batch is asked for, so the per-batch path does not
//     allocate;
//   - openers (tunOpen, with IFF_VNET_HDR and TUNSETOFFLOAD when asked; udpOpen, with UDP_GRO
//     when asked; rawOpen);
//   - batch movers (readPackets/writePackets for TUN, tunReadVnet/tunWrite for a TUN with
//     offloads, recvBatch/sendBatch for any AF_INET datagram or raw IP socket, with UDP_GRO
//     and UDP_SEGMENT modes); the segmentation and coalescing byte work is in offload.cc,
//     which gsoSplit/tcpCoalesce also expose without I/O for tests;
//   - readiness (Poller): a uv_poll_t on Node's own loop.

#include <napi.h>
#include <uv.h>

#include "offload.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <sched.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <cstdint>
#include <string>
#include <vector>

namespace {

// The kernel clamps recvmmsg/sendmmsg's vlen to UIO_MAXIOV (1024, net/socket.c); asking for
// more per call only wastes scratch, so larger batches are split into calls of this size.
constexpr size_t kMaxMsgsPerCall = 1024;

// ---------------------------------------------------------------------------------------------
// Errors

const char* ErrnoName(int err) {
  const char* n = strerrorname_np(err);
  return n ? n : "EUNKNOWN";
}

// strerrordesc_np, unlike strerror, neither depends on the locale nor shares a static buffer
// between worker threads.
const char* ErrnoDesc(int err) {
  const char* d = strerrordesc_np(err);
  return d ? d : "Unknown error";
}

// Throws `<what>: <strerror>` with Node's usual `code` and `syscall` properties, so callers can
// branch on err.code the way they would for an fs or net error.
void ThrowErrno(Napi::Env env, const std::string& syscall, const std::string& what, int err) {
  Napi::Error e = Napi::Error::New(env, what + ": " + ErrnoDesc(err));
  e.Set("code", Napi::String::New(env, ErrnoName(err)));
  e.Set("syscall", Napi::String::New(env, syscall));
  e.ThrowAsJavaScriptException();
}

void ThrowType(Napi::Env env, const std::string& msg) {
  Napi::TypeError::New(env, msg).ThrowAsJavaScriptException();
}

void ThrowRange(Napi::Env env, const std::string& msg) {
  Napi::RangeError::New(env, msg).ThrowAsJavaScriptException();
}

std::string Ipv4String(uint32_t host_order) {
  return std::to_string(host_order >> 24) + "." + std::to_string((host_order >> 16) & 0xff) +
         "." + std::to_string((host_order >> 8) & 0xff) + "." + std::to_string(host_order & 0xff);
}

// ---------------------------------------------------------------------------------------------
// Argument checking. Each helper throws and returns false on a bad argument; callers return
// undefined straight away so the pending exception reaches JS.

bool ArgInt(const Napi::CallbackInfo& info, size_t i, const char* name, int64_t min, int64_t max,
            int64_t* out) {
  Napi::Env env = info.Env();
  if (i >= info.Length() || !info[i].IsNumber()) {
    ThrowType(env, std::string(name) + " must be a number");
    return false;
  }
  double v = info[i].As<Napi::Number>().DoubleValue();
  if (!std::isfinite(v) || std::trunc(v) != v) {
    ThrowRange(env, std::string(name) + " must be an integer");
    return false;
  }
  if (v < static_cast<double>(min) || v > static_cast<double>(max)) {
    ThrowRange(env, std::string(name) + " out of range [" + std::to_string(min) + ", " +
                        std::to_string(max) + "]: " + std::to_string(static_cast<int64_t>(v)));
    return false;
  }
  *out = static_cast<int64_t>(v);
  return true;
}

bool ArgFd(const Napi::CallbackInfo& info, size_t i, int* fd) {
  int64_t v;
  if (!ArgInt(info, i, "fd", 0, INT32_MAX, &v)) return false;
  *fd = static_cast<int>(v);
  return true;
}

bool ArgBool(const Napi::CallbackInfo& info, size_t i, const char* name, bool* out) {
  if (i >= info.Length() || !info[i].IsBoolean()) {
    ThrowType(info.Env(), std::string(name) + " must be a boolean");
    return false;
  }
  *out = info[i].As<Napi::Boolean>().Value();
  return true;
}

// The data pointer napi hands back already includes the view's byteOffset, and JS guarantees a
// typed array's byteOffset is a multiple of its element size, so E* is correctly aligned.
template <napi_typedarray_type Type, typename E>
bool ArgTyped(const Napi::CallbackInfo& info, size_t i, const char* name, const char* type_name,
              E** data, size_t* length) {
  napi_env env = info.Env();
  bool is = false;
  if (i < info.Length()) napi_is_typedarray(env, info[i], &is);
  napi_typedarray_type type;
  size_t len = 0;
  void* ptr = nullptr;
  if (is) napi_get_typedarray_info(env, info[i], &type, &len, &ptr, nullptr, nullptr);
  if (!is || type != Type) {
    ThrowType(info.Env(), std::string(name) + " must be a " + type_name);
    return false;
  }
  *data = static_cast<E*>(ptr);
  *length = ptr ? len : 0;  // a detached buffer reports no data: treat it as empty
  return true;
}

bool ArgBytes(const Napi::CallbackInfo& info, size_t i, uint8_t** data, size_t* length) {
  return ArgTyped<napi_uint8_array, uint8_t>(info, i, "buf", "Buffer or Uint8Array", data,
                                             length);
}

// A slab: maxCount slots of slotSize bytes, each packet at slot + headroom.
struct SlabArgs {
  uint8_t* buf;
  size_t buf_len;
  size_t slot_size;
  size_t headroom;
  size_t max_count;
};

bool ArgSlab(const Napi::CallbackInfo& info, size_t first, SlabArgs* s) {
  int64_t slot, head, count;
  if (!ArgBytes(info, first, &s->buf, &s->buf_len)) return false;
  if (!ArgInt(info, first + 1, "slotSize", 1, INT32_MAX, &slot)) return false;
  if (!ArgInt(info, first + 2, "headroom", 0, slot - 1, &head)) return false;
  if (!ArgInt(info, first + 3, "maxCount", 0, INT32_MAX, &count)) return false;
  // 64-bit product: both factors are below 2^31, so it cannot overflow.
  if (static_cast<uint64_t>(count) * static_cast<uint64_t>(slot) > s->buf_len) {
    ThrowRange(info.Env(), "maxCount * slotSize (" + std::to_string(count) + " * " +
                               std::to_string(slot) + ") exceeds buf length " +
                               std::to_string(s->buf_len));
    return false;
  }
  s->slot_size = static_cast<size_t>(slot);
  s->headroom = static_cast<size_t>(head);
  s->max_count = static_cast<size_t>(count);
  return true;
}

bool CheckArrayLen(Napi::Env env, const char* name, size_t have, size_t need) {
  if (have < need) {
    ThrowRange(env, std::string(name) + " has " + std::to_string(have) +
                        " elements, batch needs " + std::to_string(need));
    return false;
  }
  return true;
}

// Checks every descriptor i < count with lens[i] > 0 against the buffer before any packet is
// sent, so a bad entry in the middle never leaves half a batch on the wire.
bool CheckDescriptors(Napi::Env env, size_t buf_len, const int32_t* offs, const int32_t* lens,
                      size_t count) {
  for (size_t i = 0; i < count; i++) {
    if (lens[i] <= 0) continue;
    int64_t off = offs[i];
    if (off < 0 || off + static_cast<int64_t>(lens[i]) > static_cast<int64_t>(buf_len)) {
      ThrowRange(env, "packet " + std::to_string(i) + " [" + std::to_string(off) + ", +" +
                          std::to_string(lens[i]) + ") is outside buf (length " +
                          std::to_string(buf_len) + ")");
      return false;
    }
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// Per-environment state. Worker threads each get their own napi_env and may run batches at the
// same time, so scratch lives here rather than in globals.

struct Scratch {
  std::vector<mmsghdr> msgs;
  std::vector<iovec> iovs;
  std::vector<sockaddr_in> addrs;

  void Reserve(size_t n) {
    if (msgs.size() >= n) return;
    msgs.resize(n);
    iovs.resize(n);
    addrs.resize(n);
  }
};

// The coalescer's per-batch plan arrays and the iovecs of one super-packet write.
struct OffloadScratch {
  std::vector<uint32_t> head, tail, count, next;
  std::vector<uint16_t> payload_off;
  std::vector<weft::VnetHdr> hdr;
  iovec iov[2 + weft::kMaxMergeSegments];
  uint8_t vnet[weft::kVnetHdrLen];

  weft::CoalescePlan Plan(size_t n) {
    if (head.size() < n) {
      head.resize(n);
      tail.resize(n);
      count.resize(n);
      next.resize(n);
      payload_off.resize(n);
      hdr.resize(n);
    }
    weft::CoalescePlan p;
    p.cap = n;
    p.head = head.data();
    p.tail = tail.data();
    p.count = count.data();
    p.next = next.data();
    p.payload_off = payload_off.data();
    p.hdr = hdr.data();
    return p;
  }
};

struct UdpScratch;

struct AddonData {
  Napi::FunctionReference poller_ctor;
  Scratch scratch;
  OffloadScratch offload;
  std::unique_ptr<UdpScratch> udp;
};

AddonData* Data(Napi::Env env) { return env.GetInstanceData<AddonData>(); }

// ---------------------------------------------------------------------------------------------
// TUN

// tunOpen(name, multiQueue, vnetHdr = false) -> { fd, name, offloads }
Napi::Value TunOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) {
    ThrowType(env, "name must be a string");
    return env.Undefined();
  }
  std::string name = info[0].As<Napi::String>().Utf8Value();
  bool multi_queue;
  if (!ArgBool(info, 1, "multiQueue", &multi_queue)) return env.Undefined();
  bool vnet_hdr = false;
  if (info.Length() > 2 && !info[2].IsUndefined() && !ArgBool(info, 2, "vnetHdr", &vnet_hdr))
    return env.Undefined();
  // IFNAMSIZ counts the terminating NUL; the kernel rejects longer names with EINVAL, but the
  // copy into ifr_name below must not overflow first.
  if (name.size() >= IFNAMSIZ || name.find('\0') != std::string::npos) {
    ThrowRange(env, "interface name must be at most " + std::to_string(IFNAMSIZ - 1) +
                        " bytes without NUL: " + name);
    return env.Undefined();
  }

  // O_NONBLOCK: reads are driven by uv_poll readiness and must return EAGAIN when drained.
  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    ThrowErrno(env, "open", "open /dev/net/tun", errno);
    return env.Undefined();
  }
  ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  // IFF_NO_PI: packets start at the IP header, without the 4-byte tun_pi prefix, so slot
  // offsets line up with what the datapath parses (as wireguard-go and flannel open it).
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
  if (multi_queue) ifr.ifr_flags |= IFF_MULTI_QUEUE;
  // IFF_VNET_HDR: every read and write carries a virtio-net header in front of the packet,
  // the channel through which TUNSETOFFLOAD's super-packets and partial checksums travel.
  if (vnet_hdr) ifr.ifr_flags |= IFF_VNET_HDR;
  memcpy(ifr.ifr_name, name.data(), name.size());
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    int err = errno;
    close(fd);
    ThrowErrno(env, "ioctl", "TUNSETIFF " + (name.empty() ? std::string("(any)") : name), err);
    return env.Undefined();
  }
  // IFF_VNET_HDR belongs to the device, not to this fd: attaching a queue to a multi-queue
  // device whose other queues were opened the other way leaves every queue with whatever the
  // device has (checked on 6.18: a queue opened without it still got headers). TUNGETIFF
  // reports the device's flags; a queue that would misread every packet is refused here.
  ifreq got;
  memset(&got, 0, sizeof got);
  if (ioctl(fd, TUNGETIFF, &got) < 0) {
    int err = errno;
    close(fd);
    ThrowErrno(env, "ioctl", "TUNGETIFF " + name, err);
    return env.Undefined();
  }
  if (!!(got.ifr_flags & IFF_VNET_HDR) != vnet_hdr) {
    close(fd);
    ThrowErrno(env, "ioctl",
               "TUNSETIFF " + name + ": the device's other queues were opened " +
                   (vnet_hdr ? "without" : "with") + " offload (IFF_VNET_HDR)",
               EINVAL);
    return env.Undefined();
  }
  unsigned offloads = 0;
  if (vnet_hdr) {
    // The kernel's default is also 10 (sizeof(struct virtio_net_hdr)), but a persistent device
    // keeps whatever an earlier opener set, so say it.
    int hdr_size = static_cast<int>(weft::kVnetHdrLen);
    if (ioctl(fd, TUNSETVNETHDRSZ, &hdr_size) < 0) {
      int err = errno;
      close(fd);
      ThrowErrno(env, "ioctl", "TUNSETVNETHDRSZ 10", err);
      return env.Undefined();
    }
    // tun_set_offload refuses (EINVAL) any bit it does not know, so a kernel before 6.2 fails
    // the USO set as a whole; then TSO alone, then none (the header is still there, all zero
    // except for CHECKSUM_PARTIAL, which only TUN_F_CSUM enables).
    const unsigned tries[] = {TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_USO4 | TUN_F_USO6,
                              TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6, 0};
    bool set = false;
    int err = 0;
    for (unsigned t : tries) {
      if (ioctl(fd, TUNSETOFFLOAD, static_cast<unsigned long>(t)) == 0) {
        offloads = t;
        set = true;
        break;
      }
      err = errno;
    }
    if (!set) {
      close(fd);
      ThrowErrno(env, "ioctl", "TUNSETOFFLOAD", err);
      return env.Undefined();
    }
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("fd", Napi::Number::New(env, fd));
  // The kernel fills in the name it chose (it expands "%d" templates and picks tunN for "").
  out.Set("name", Napi::String::New(env, ifr.ifr_name, strnlen(ifr.ifr_name, IFNAMSIZ)));
  out.Set("offloads", Napi::Number::New(env, offloads));
  return out;
}

// readPackets(fd, buf, slotSize, headroom, maxCount, offs, lens) -> count
Napi::Value ReadPackets(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  SlabArgs s;
  int32_t *offs, *lens;
  size_t offs_len, lens_len;
  if (!ArgFd(info, 0, &fd) || !ArgSlab(info, 1, &s) ||
      !ArgTyped<napi_int32_array>(info, 5, "offs", "Int32Array", &offs, &offs_len) ||
      !ArgTyped<napi_int32_array>(info, 6, "lens", "Int32Array", &lens, &lens_len) ||
      !CheckArrayLen(env, "offs", offs_len, s.max_count) ||
      !CheckArrayLen(env, "lens", lens_len, s.max_count))
    return env.Undefined();

  const size_t cap = s.slot_size - s.headroom;
  // tun_chr_read_iter returns min(packet length, buffer length) (drivers/net/tun.c), so a
  // packet cut to fit looks exactly like one that fills the slot. A one-byte spill iovec after
  // the slot tells them apart: the kernel only reaches it when the packet is longer.
  uint8_t spill;
  iovec iov[2];
  iov[1].iov_base = &spill;
  iov[1].iov_len = 1;
  size_t n = 0;
  while (n < s.max_count) {
    size_t off = n * s.slot_size + s.headroom;
    iov[0].iov_base = s.buf + off;
    iov[0].iov_len = cap;
    ssize_t r = readv(fd, iov, 2);
    if (r < 0) {
      int err = errno;
      if (err == EINTR) continue;
      if (err == EAGAIN || err == EWOULDBLOCK) break;
      // After at least one packet, hand those over; a persistent error repeats on the next
      // call, where it is thrown with nothing lost.
      if (n > 0) break;
      ThrowErrno(env, "readv", "read fd " + std::to_string(fd), err);
      return env.Undefined();
    }
    // A TUN device never yields an empty read; 0 means EOF on some other kind of fd, and
    // reading on would spin.
    if (r == 0) break;
    offs[n] = static_cast<int32_t>(off);
    // -1 tells the caller to count a drop instead of parsing a truncated packet.
    lens[n] = static_cast<size_t>(r) > cap ? -1 : static_cast<int32_t>(r);
    n++;
  }
  return Napi::Number::New(env, static_cast<double>(n));
}

// writePackets(fd, buf, offs, lens, count) -> written
Napi::Value WritePackets(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  uint8_t* buf;
  size_t buf_len, offs_len, lens_len;
  int32_t *offs, *lens;
  int64_t count;
  if (!ArgFd(info, 0, &fd) || !ArgBytes(info, 1, &buf, &buf_len) ||
      !ArgTyped<napi_int32_array>(info, 2, "offs", "Int32Array", &offs, &offs_len) ||
      !ArgTyped<napi_int32_array>(info, 3, "lens", "Int32Array", &lens, &lens_len) ||
      !ArgInt(info, 4, "count", 0, INT32_MAX, &count) ||
      !CheckArrayLen(env, "offs", offs_len, count) ||
      !CheckArrayLen(env, "lens", lens_len, count) ||
      !CheckDescriptors(env, buf_len, offs, lens, count))
    return env.Undefined();

  size_t written = 0;
  for (size_t i = 0; i < static_cast<size_t>(count); i++) {
    if (lens[i] <= 0) continue;
    ssize_t r;
    do {
      r = write(fd, buf + offs[i], static_cast<size_t>(lens[i]));
    } while (r < 0 && errno == EINTR);
    if (r >= 0) {
      written++;
      continue;
    }
    int err = errno;
    if (err == EAGAIN || err == EWOULDBLOCK) break;
    // A closed or wrong fd fails every packet the same way; skipping them all would turn a
    // programming error into silent loss.
    if (err == EBADF) {
      ThrowErrno(env, "write", "write fd " + std::to_string(fd), err);
      return env.Undefined();
    }
    // Anything else (EINVAL for a malformed packet, EIO while the link is down) concerns this
    // packet only: drop it and carry on with the batch.
  }
  return Napi::Number::New(env, static_cast<double>(written));
}

// ---------------------------------------------------------------------------------------------
// TUN with IFF_VNET_HDR: segmentation offload (the byte work is in offload.cc)

// Largest read a TUN with offloads hands over: a virtio-net header and a 64 KB IPv4/IPv6
// packet (tun's GSO limit keeps IP total length within 16 bits).
constexpr size_t kVnetReadMax = weft::kVnetHdrLen + 65535;

bool ArgCounters(const Napi::CallbackInfo& info, size_t i, size_t need, double** ctr) {
  size_t len;
  if (!ArgTyped<napi_float64_array, double>(info, i, "counters", "Float64Array", ctr, &len))
    return false;
  if (len < need) {
    ThrowRange(info.Env(), "counters has " + std::to_string(len) + " elements, needs " +
                               std::to_string(need));
    return false;
  }
  return true;
}

// Continuation state of a split cut short by the slots running out: [pending length, next
// segment]. JS can write it, so every use re-derives the split from the buffer and only takes
// the segment index, which Split checks against the segment count.
bool ArgState(const Napi::CallbackInfo& info, size_t i, int32_t** state) {
  size_t len;
  if (!ArgTyped<napi_int32_array, int32_t>(info, i, "state", "Int32Array", state, &len))
    return false;
  if (len < 2) {
    ThrowRange(info.Env(), "state needs 2 elements, has " + std::to_string(len));
    return false;
  }
  return true;
}

bool ArgSlabWithDescriptors(const Napi::CallbackInfo& info, size_t first, SlabArgs* s,
                            weft::Slab* slab) {
  Napi::Env env = info.Env();
  int32_t *offs, *lens;
  size_t offs_len, lens_len;
  if (!ArgSlab(info, first, s) ||
      !ArgTyped<napi_int32_array>(info, first + 4, "offs", "Int32Array", &offs, &offs_len) ||
      !ArgTyped<napi_int32_array>(info, first + 5, "lens", "Int32Array", &lens, &lens_len) ||
      !CheckArrayLen(env, "offs", offs_len, s->max_count) ||
      !CheckArrayLen(env, "lens", lens_len, s->max_count))
    return false;
  // Offsets cross back to JS as int32: the last slot must be addressable as one.
  if (s->max_count > 0 && (s->max_count - 1) * s->slot_size + s->headroom > INT32_MAX) {
    ThrowRange(env, "slab too large for int32 offsets");
    return false;
  }
  *slab = {s->buf, s->buf_len, s->slot_size, s->headroom, s->max_count, offs, lens};
  return true;
}

// Resumes a split cut short by the previous call. Returns packets produced; *blocked when the
// slots ran out again.
size_t ResumeSplit(const uint8_t* src, size_t src_cap, int32_t* state, weft::Slab* slab,
                   double* ctr, bool* blocked) {
  *blocked = false;
  if (state[0] == 0) return 0;
  int64_t pending = state[0], next = state[1];
  state[0] = 0;
  state[1] = 0;
  if (pending <= 0 || static_cast<uint64_t>(pending) > src_cap || next <= 0) {
    ctr[weft::kCtrRefusedFirst + weft::kRefuseState] += 1;
    return 0;
  }
  weft::SplitResult r = weft::Split(src, static_cast<size_t>(pending),
                                    static_cast<uint32_t>(next), slab, 0, ctr);
  if (r.more) {
    state[0] = static_cast<int32_t>(pending);
    state[1] = static_cast<int32_t>(r.next);
    *blocked = true;
  }
  return r.produced;
}

// tunReadVnet(fd, rbuf, buf, slotSize, headroom, maxCount, offs, lens, state, counters) -> count
//
// readPackets for a TUN opened with vnetHdr: each read lands in rbuf (>= 65545 bytes, owned by
// the caller with the state, one pair per fd) and is split into ordinary packets in the slots;
// a super-packet that does not fit the remaining slots continues at slot 0 of the next call.
Napi::Value TunReadVnet(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  uint8_t* rbuf;
  size_t rbuf_len;
  SlabArgs s;
  weft::Slab slab;
  int32_t* state;
  double* ctr;
  if (!ArgFd(info, 0, &fd) ||
      !ArgTyped<napi_uint8_array>(info, 1, "rbuf", "Buffer or Uint8Array", &rbuf, &rbuf_len) ||
      !ArgSlabWithDescriptors(info, 2, &s, &slab) || !ArgState(info, 8, &state) ||
      !ArgCounters(info, 9, weft::kCtrCount, &ctr))
    return env.Undefined();
  if (rbuf_len < kVnetReadMax) {
    ThrowRange(env, "rbuf must hold at least " + std::to_string(kVnetReadMax) + " bytes");
    return env.Undefined();
  }
  bool blocked;
  size_t n = ResumeSplit(rbuf, rbuf_len, state, &slab, ctr, &blocked);
  if (blocked) return Napi::Number::New(env, static_cast<double>(n));
  uint8_t spill;
  iovec iov[2];
  iov[0].iov_base = rbuf;
  iov[0].iov_len = kVnetReadMax;
  iov[1].iov_base = &spill;
  iov[1].iov_len = 1;
  while (n < s.max_count) {
    ssize_t r = readv(fd, iov, 2);
    if (r < 0) {
      int err = errno;
      if (err == EINTR) continue;
      if (err == EAGAIN || err == EWOULDBLOCK) break;
      if (n > 0) break;
      ThrowErrno(env, "readv", "read fd " + std::to_string(fd), err);
      return env.Undefined();
    }
    if (r == 0) break;
    if (static_cast<size_t>(r) > kVnetReadMax) {
      // Longer than any super-packet the granted offloads allow: report it like readPackets
      // reports a packet too long for its slot.
      ctr[weft::kCtrTruncatedReads] += 1;
      ctr[weft::kCtrPacketsRead] += 1;
      slab.offs[n] = static_cast<int32_t>(n * s.slot_size + s.headroom);
      slab.lens[n] = -1;
      n++;
      continue;
    }
    weft::SplitResult res = weft::Split(rbuf, static_cast<size_t>(r), 0, &slab, n, ctr);
    n += res.produced;
    if (res.more) {
      state[0] = static_cast<int32_t>(r);
      state[1] = static_cast<int32_t>(res.next);
      break;
    }
  }
  return Napi::Number::New(env, static_cast<double>(n));
}

// gsoSplit(src, srcLen, buf, slotSize, headroom, maxCount, offs, lens, state, counters) -> count
//
// The split of tunReadVnet on a buffer instead of a read, for tests and fuzzing. With state
// pending, src must be the same buffer again (state[0] must equal srcLen).
Napi::Value GsoSplit(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint8_t* src;
  size_t src_cap;
  int64_t src_len;
  SlabArgs s;
  weft::Slab slab;
  int32_t* state;
  double* ctr;
  if (!ArgTyped<napi_uint8_array>(info, 0, "src", "Buffer or Uint8Array", &src, &src_cap) ||
      !ArgInt(info, 1, "srcLen", 0, static_cast<int64_t>(std::min<size_t>(src_cap, kVnetReadMax)),
              &src_len) ||
      !ArgSlabWithDescriptors(info, 2, &s, &slab) || !ArgState(info, 8, &state) ||
      !ArgCounters(info, 9, weft::kCtrCount, &ctr))
    return env.Undefined();
  if (state[0] != 0) {
    if (state[0] != src_len) {
      state[0] = 0;
      state[1] = 0;
      ctr[weft::kCtrRefusedFirst + weft::kRefuseState] += 1;
      return Napi::Number::New(env, 0);
    }
    bool blocked;
    size_t n = ResumeSplit(src, static_cast<size_t>(src_len), state, &slab, ctr, &blocked);
    return Napi::Number::New(env, static_cast<double>(n));
  }
  if (s.max_count == 0) return Napi::Number::New(env, 0);
  weft::SplitResult r = weft::Split(src, static_cast<size_t>(src_len), 0, &slab, 0, ctr);
  if (r.more) {
    state[0] = static_cast<int32_t>(src_len);
    state[1] = static_cast<int32_t>(r.next);
  }
  return Napi::Number::New(env, static_cast<double>(r.produced));
}

// The iovecs of write unit u: [virtio-net header][first packet whole][later payloads...].
// Returns the iovec count; the header is left out when vnet is false.
size_t UnitIovecs(OffloadScratch& sc, const weft::CoalescePlan& plan, size_t u, uint8_t* buf,
                  const int32_t* offs, const int32_t* lens, bool vnet) {
  size_t k = 0;
  if (vnet) {
    weft::EncodeVnetHdr(plan.hdr[u], sc.vnet);
    sc.iov[k].iov_base = sc.vnet;
    sc.iov[k].iov_len = weft::kVnetHdrLen;
    k++;
  }
  uint32_t i = plan.head[u];
  sc.iov[k].iov_base = buf + offs[i];
  sc.iov[k].iov_len = static_cast<size_t>(lens[i]);
  k++;
  const size_t po = plan.payload_off[u];
  for (uint32_t m = plan.next[i]; m != weft::kEnd; m = plan.next[m]) {
    sc.iov[k].iov_base = buf + offs[m] + po;
    sc.iov[k].iov_len = static_cast<size_t>(lens[m]) - po;
    k++;
  }
  return k;
}

bool ArgBatch(const Napi::CallbackInfo& info, size_t first, uint8_t** buf, size_t* buf_len,
              int32_t** offs, int32_t** lens, int64_t* count) {
  Napi::Env env = info.Env();
  size_t offs_len, lens_len;
  return ArgBytes(info, first, buf, buf_len) &&
         ArgTyped<napi_int32_array>(info, first + 1, "offs", "Int32Array", offs, &offs_len) &&
         ArgTyped<napi_int32_array>(info, first + 2, "lens", "Int32Array", lens, &lens_len) &&
         ArgInt(info, first + 3, "count", 0, INT32_MAX, count) &&
         CheckArrayLen(env, "offs", offs_len, static_cast<size_t>(*count)) &&
         CheckArrayLen(env, "lens", lens_len, static_cast<size_t>(*count)) &&
         CheckDescriptors(env, *buf_len, *offs, *lens, static_cast<size_t>(*count));
}

// tunWrite(fd, buf, offs, lens, count, vnet, counters) -> written
//
// writePackets for either kind of TUN, finishing pseudo-header-only TCP/UDP checksums first.
// With vnet (a TUN opened with vnetHdr), runs of one TCP flow go out as one GSO super-packet,
// everything else behind an all-zero virtio-net header, each with one writev. Returns the batch
// entries the kernel took (a merged write counts all its segments).
Napi::Value TunWrite(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  uint8_t* buf;
  size_t buf_len;
  int32_t *offs, *lens;
  int64_t count;
  bool vnet;
  double* ctr;
  if (!ArgFd(info, 0, &fd) || !ArgBatch(info, 1, &buf, &buf_len, &offs, &lens, &count) ||
      !ArgBool(info, 5, "vnet", &vnet) || !ArgCounters(info, 6, weft::kCtrCount, &ctr))
    return env.Undefined();
  OffloadScratch& sc = Data(env)->offload;
  weft::CoalescePlan plan = sc.Plan(static_cast<size_t>(count));
  weft::Coalesce(buf, offs, lens, static_cast<size_t>(count), vnet, &plan, ctr);
  size_t written = 0;
  for (size_t u = 0; u < plan.units; u++) {
    size_t k = UnitIovecs(sc, plan, u, buf, offs, lens, vnet);
    ssize_t r;
    do {
      r = writev(fd, sc.iov, static_cast<int>(k));
    } while (r < 0 && errno == EINTR);
    if (r >= 0) {
      written += plan.count[u];
      if (plan.count[u] > 1) {
        ctr[weft::kCtrCoalescedWrites] += 1;
        ctr[weft::kCtrSegmentsMerged] += plan.count[u];
      } else {
        ctr[weft::kCtrPlainWrites] += 1;
      }
      continue;
    }
    int err = errno;
    if (err == EAGAIN || err == EWOULDBLOCK) break;
    if (err == EBADF) {
      if (written > 0) break;
      ThrowErrno(env, "writev", "write fd " + std::to_string(fd), err);
      return env.Undefined();
    }
    // As writePackets: a packet (or super-packet) the kernel refuses is dropped, and counted.
    ctr[weft::kCtrWriteErrors] += plan.count[u];
  }
  return Napi::Number::New(env, static_cast<double>(written));
}

// tcpCoalesce(buf, offs, lens, count, vnet, out, outOffs, outLens, counters) -> units
//
// tunWrite without the fd: each write unit's bytes, exactly as writev would hand them to the
// kernel (virtio-net header first when vnet), are copied to out, unit i at outOffs[i] with
// outLens[i] bytes. out must hold every packet plus a header per packet; buf is patched in
// place as tunWrite patches it.
Napi::Value TcpCoalesce(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint8_t *buf, *out;
  size_t buf_len, out_len, oo_len, ol_len;
  int32_t *offs, *lens, *out_offs, *out_lens;
  int64_t count;
  bool vnet;
  double* ctr;
  if (!ArgBatch(info, 0, &buf, &buf_len, &offs, &lens, &count) ||
      !ArgBool(info, 4, "vnet", &vnet) ||
      !ArgTyped<napi_uint8_array>(info, 5, "out", "Buffer or Uint8Array", &out, &out_len) ||
      !ArgTyped<napi_int32_array>(info, 6, "outOffs", "Int32Array", &out_offs, &oo_len) ||
      !ArgTyped<napi_int32_array>(info, 7, "outLens", "Int32Array", &out_lens, &ol_len) ||
      !CheckArrayLen(env, "outOffs", oo_len, static_cast<size_t>(count)) ||
      !CheckArrayLen(env, "outLens", ol_len, static_cast<size_t>(count)) ||
      !ArgCounters(info, 8, weft::kCtrCount, &ctr))
    return env.Undefined();
  uint64_t need = 0;
  for (int64_t i = 0; i < count; i++)
    if (lens[i] > 0) need += static_cast<uint64_t>(lens[i]) + (vnet ? weft::kVnetHdrLen : 0);
  if (need > out_len || need > INT32_MAX) {
    ThrowRange(env, "out has " + std::to_string(out_len) + " bytes, the batch may need " +
                        std::to_string(need));
    return env.Undefined();
  }
  OffloadScratch& sc = Data(env)->offload;
  weft::CoalescePlan plan = sc.Plan(static_cast<size_t>(count));
  weft::Coalesce(buf, offs, lens, static_cast<size_t>(count), vnet, &plan, ctr);
  size_t pos = 0;
  for (size_t u = 0; u < plan.units; u++) {
    size_t k = UnitIovecs(sc, plan, u, buf, offs, lens, vnet);
    out_offs[u] = static_cast<int32_t>(pos);
    for (size_t j = 0; j < k; j++) {
      memcpy(out + pos, sc.iov[j].iov_base, sc.iov[j].iov_len);
      pos += sc.iov[j].iov_len;
    }
    out_lens[u] = static_cast<int32_t>(pos - static_cast<size_t>(out_offs[u]));
    if (plan.count[u] > 1) {
      ctr[weft::kCtrCoalescedWrites] += 1;
      ctr[weft::kCtrSegmentsMerged] += plan.count[u];
    } else {
      ctr[weft::kCtrPlainWrites] += 1;
    }
  }
  return Napi::Number::New(env, static_cast<double>(plan.units));
}

// ---------------------------------------------------------------------------------------------
// UDP and raw IP sockets (recvBatch/sendBatch only assume an AF_INET socket that keeps
// message boundaries)

bool SetBuf(int fd, int force_opt, int opt, int bytes) {
  // *BUFFORCE (CAP_NET_ADMIN) ignores net.core.[rw]mem_max, which defaults to ~208 KiB and is
  // far too small for a tunnel's burst; without the capability, the plain option is clamped
  // to the sysctl limit but still helps.
  if (setsockopt(fd, SOL_SOCKET, force_opt, &bytes, sizeof bytes) == 0) return true;
  return setsockopt(fd, SOL_SOCKET, opt, &bytes, sizeof bytes) == 0;
}

// Both socket buffer sizes of a freshly opened socket (0 keeps the kernel default). On failure
// the socket is closed, so the caller never leaks a descriptor it cannot return, and a JS
// exception names the call.
bool SetBuffersOrClose(Napi::Env env, int fd, int64_t rcvbuf, int64_t sndbuf) {
  if ((rcvbuf > 0 && !SetBuf(fd, SO_RCVBUFFORCE, SO_RCVBUF, static_cast<int>(rcvbuf))) ||
      (sndbuf > 0 && !SetBuf(fd, SO_SNDBUFFORCE, SO_SNDBUF, static_cast<int>(sndbuf)))) {
    int err = errno;
    close(fd);
    ThrowErrno(env, "setsockopt", "setsockopt SO_RCVBUF/SO_SNDBUF", err);
    return false;
  }
  return true;
}

// udpOpen(bindAddr, port, rcvbuf, sndbuf, gro = false, dfClear = false) -> fd
Napi::Value UdpOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t addr, port, rcvbuf, sndbuf;
  if (!ArgInt(info, 0, "bindAddr", 0, UINT32_MAX, &addr) ||
      !ArgInt(info, 1, "port", 0, 65535, &port) ||
      !ArgInt(info, 2, "rcvbuf", 0, INT32_MAX / 2, &rcvbuf) ||
      !ArgInt(info, 3, "sndbuf", 0, INT32_MAX / 2, &sndbuf))
    return env.Undefined();
  bool gro = false;
  if (info.Length() > 4 && !info[4].IsUndefined() && !ArgBool(info, 4, "gro", &gro))
    return env.Undefined();
  bool dfClear = false;
  if (info.Length() > 5 && !info[5].IsUndefined() && !ArgBool(info, 5, "dfClear", &dfClear))
    return env.Undefined();

  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    ThrowErrno(env, "socket", "socket AF_INET SOCK_DGRAM", errno);
    return env.Undefined();
  }
  if (!SetBuffersOrClose(env, fd, rcvbuf, sndbuf)) return env.Undefined();
  sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(static_cast<uint32_t>(addr));
  sa.sin_port = htons(static_cast<uint16_t>(port));
  if (bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) < 0) {
    int err = errno;
    close(fd);
    ThrowErrno(env, "bind",
               "bind " + Ipv4String(static_cast<uint32_t>(addr)) + ":" + std::to_string(port),
               err);
    return env.Undefined();
  }
  if (dfClear) {
    // IP_PMTUDISC_DONT: DF clear on every datagram, and a datagram over the route MTU is
    // fragmented rather than refused: what the kernel's VXLAN device sends by default (no `df`
    // option, vxlan_xmit_one), so weft's vxlan looks the same on the underlay.
    int v = IP_PMTUDISC_DONT;
    if (setsockopt(fd, IPPROTO_IP, IP_MTU_DISCOVER, &v, sizeof v) < 0) {
      int err = errno;
      close(fd);
      ThrowErrno(env, "setsockopt", "setsockopt IP_MTU_DISCOVER", err);
      return env.Undefined();
    }
  }
  if (gro) {
    // UDP_GRO: the socket accepts GRO trains (and GSO datagrams from local senders) whole,
    // with their gso_size in a UDP_GRO control message, instead of the kernel segmenting them
    // first (udp_unexpected_gso).
    int one = 1;
    if (setsockopt(fd, IPPROTO_UDP, UDP_GRO, &one, sizeof one) < 0) {
      int err = errno;
      close(fd);
      ThrowErrno(env, "setsockopt", "setsockopt UDP_GRO", err);
      return env.Undefined();
    }
  }
  return Napi::Number::New(env, fd);
}

// rawOpen(protocol, hdrincl, bindAddr, rcvbuf, sndbuf) -> fd
//
// An AF_INET raw socket (raw(7)). What the batch movers see on it:
//   - receive: every datagram starts at its IPv4 header (raw_recvmsg copies from the network
//     header on), msg_name holds the source address with port 0, and MSG_TRUNC marks one that
//     did not fit the slot, as for UDP. The kernel delivers to a raw socket after reassembly
//     (ip_local_deliver), so a fragmented outer packet arrives whole.
//   - send without IP_HDRINCL: the buffer is the payload and the kernel adds the IP header.
//   - send with IP_HDRINCL (or protocol IPPROTO_RAW, which implies it): the buffer is the whole
//     IP packet. raw_send_hdrinc always fills in Total Length and the header checksum, fills in
//     the ID when it is 0 and the source when it is 0.0.0.0, routes on msg_name's address (not
//     the header's), and never fragments: a packet over the route's MTU fails with EMSGSIZE,
//     which sendBatch drops as one refused datagram.
// An IPPROTO_RAW socket receives nothing (no protocol 255 arrives), so it is the send half that
// never fills a receive queue nobody reads.
Napi::Value RawOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t protocol, addr, rcvbuf, sndbuf;
  bool hdrincl;
  // Protocol 0 (IPPROTO_IP) names no protocol for a raw socket; the kernel would refuse it
  // with EPROTONOSUPPORT, but it is the caller's mistake, so say so as one.
  if (!ArgInt(info, 0, "protocol", 1, 255, &protocol) ||
      !ArgBool(info, 1, "hdrincl", &hdrincl) ||
      !ArgInt(info, 2, "bindAddr", 0, UINT32_MAX, &addr) ||
      !ArgInt(info, 3, "rcvbuf", 0, INT32_MAX / 2, &rcvbuf) ||
      !ArgInt(info, 4, "sndbuf", 0, INT32_MAX / 2, &sndbuf))
    return env.Undefined();

  int fd = socket(AF_INET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, static_cast<int>(protocol));
  if (fd < 0) {
    ThrowErrno(env, "socket", "socket AF_INET SOCK_RAW protocol " + std::to_string(protocol),
               errno);
    return env.Undefined();
  }
  if (hdrincl) {
    int one = 1;
    if (setsockopt(fd, IPPROTO_IP, IP_HDRINCL, &one, sizeof one) < 0) {
      int err = errno;
      close(fd);
      ThrowErrno(env, "setsockopt", "setsockopt IP_HDRINCL", err);
      return env.Undefined();
    }
  }
  if (!SetBuffersOrClose(env, fd, rcvbuf, sndbuf)) return env.Undefined();
  // For a raw socket bind() sets only the local address (there is no port): raw_v4_match then
  // delivers only datagrams addressed to it, and it becomes the source of packets the kernel
  // builds headers for. Unbound, the socket sees the protocol's datagrams to every local address.
  if (addr != 0) {
    sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(static_cast<uint32_t>(addr));
    if (bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) < 0) {
      int err = errno;
      close(fd);
      ThrowErrno(env, "bind", "bind raw " + Ipv4String(static_cast<uint32_t>(addr)), err);
      return env.Undefined();
    }
  }
  return Napi::Number::New(env, fd);
}

// localPort(fd) -> port
Napi::Value LocalPort(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!ArgFd(info, 0, &fd)) return env.Undefined();
  sockaddr_in sa;
  socklen_t len = sizeof sa;
  memset(&sa, 0, sizeof sa);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len) < 0) {
    ThrowErrno(env, "getsockname", "getsockname fd " + std::to_string(fd), errno);
    return env.Undefined();
  }
  if (sa.sin_family != AF_INET) {
    ThrowType(env, "fd " + std::to_string(fd) + " is not an AF_INET socket");
    return env.Undefined();
  }
  return Napi::Number::New(env, ntohs(sa.sin_port));
}

// ---------------------------------------------------------------------------------------------
// UDP segmentation offload (UDP_SEGMENT) and receive coalescing (UDP_GRO)

// Cumulative counters of one socket's GSO/GRO use (layout mirrored in src/io/native.ts,
// UDP_COUNTER).
enum UdpCounter : int {
  kUdpGsoMessages = 0,   // messages sent with a UDP_SEGMENT control message
  kUdpGsoSegments,       // datagrams carried by them
  kUdpGsoDisabled,       // 1 once the kernel refused GSO for good (EIO, EOPNOTSUPP): plain datagrams from then on
  kUdpGsoFallbacks,      // GSO messages refused and resent as plain datagrams
  kUdpGroDatagrams,      // coalesced datagrams received (UDP_GRO control message present)
  kUdpGroSegments,       // datagrams split out of them
  kUdpGroTruncated,      // datagrams or segments larger than a slot (lens -1)
  kUdpGroStateRefused,   // continuation state found inconsistent and discarded
  kUdpTunnelSupers,      // UDP tunnel super-datagrams received (see RecvBatchGro)
  kUdpTunnelSegments,    // datagrams cut from them
  kUdpTunnelRefused,     // super-datagrams whose inner packet could not be split (lens -1)
  kUdpCtrCount
};

// udp_send_skb refuses (EINVAL) a send of more than UDP_MAX_SEGMENTS segments: 128 on the 6.18
// kernel here (checked: 129 fails), 64 on older kernels; the older limit works on both.
constexpr size_t kUdpMaxSegments = 64;
// The largest UDP payload over IPv4: 65535 - 20 (IP) - 8 (UDP).
constexpr size_t kUdpMaxPayload = 65507;
// Each coalesced datagram is received whole into a stage region first (a GRO skb is at most
// 64 KB), then cut into slots.
constexpr size_t kGroRegion = 65536;
constexpr size_t kGroStateHead = 3;  // [pending datagrams, current datagram, offset in it]
// per datagram: [length or -1, gso_size, addr, port, kind (0 train, 1 tunnel super-datagram)]
constexpr size_t kGroStatePer = 5;

struct alignas(cmsghdr) CmsgSpace {
  uint8_t b[CMSG_SPACE(sizeof(int))];
};

struct UdpScratch {
  std::vector<mmsghdr> msgs;
  std::vector<iovec> iovs;
  std::vector<sockaddr_in> addrs;
  std::vector<CmsgSpace> ctrl;
  std::vector<uint32_t> first, entries;  // per GSO message: its batch entries

  void Reserve(size_t msgs_n, size_t iovs_n) {
    if (msgs.size() < msgs_n) {
      msgs.resize(msgs_n);
      addrs.resize(msgs_n);
      ctrl.resize(msgs_n);
      first.resize(msgs_n);
      entries.resize(msgs_n);
    }
    if (iovs.size() < iovs_n) iovs.resize(iovs_n);
  }
};

UdpScratch& UdpSc(Napi::Env env);

// sendBatch with gso: consecutive entries to one address and port whose lengths are equal
// (the last may be shorter) go out as one message with a UDP_SEGMENT control message and one
// iovec per entry; the kernel (or the receiving side's GRO-less path) cuts it into exactly
// those datagrams (udp_send_skb, __udp_gso_segment). Returns batch entries sent.
Napi::Value SendBatchGso(Napi::Env env, int fd, uint8_t* buf, const int32_t* offs,
                         const int32_t* lens, const uint32_t* addrs, const uint16_t* ports,
                         size_t count, double* ctr) {
  UdpScratch& sc = UdpSc(env);
  size_t sent = 0;
  size_t next = 0;
  size_t plain_until = 0;  // entries before this go out plain (a refused GSO message, resent)
  bool stop = false;
  while (!stop && next < count) {
    const size_t left = count - next;
    sc.Reserve(std::min(left, kMaxMsgsPerCall), std::min(left, kMaxMsgsPerCall * kUdpMaxSegments));
    size_t n = 0, k = 0;
    while (next < count && n < kMaxMsgsPerCall) {
      const size_t i = next;
      if (lens[i] <= 0) {
        next++;
        continue;
      }
      const bool plain = ctr[kUdpGsoDisabled] != 0 || i < plain_until;
      const size_t seg = static_cast<size_t>(lens[i]);
      size_t j = i + 1, total = seg;
      sc.iovs[k] = {buf + offs[i], seg};
      size_t segs = 1;
      if (!plain && seg <= kUdpMaxPayload) {
        while (j < count && segs < kUdpMaxSegments && lens[j] > 0 && addrs[j] == addrs[i] &&
               ports[j] == ports[i] && static_cast<size_t>(lens[j]) <= seg &&
               total + static_cast<size_t>(lens[j]) <= kUdpMaxPayload) {
          sc.iovs[k + segs] = {buf + offs[j], static_cast<size_t>(lens[j])};
          total += static_cast<size_t>(lens[j]);
          segs++;
          j++;
          if (static_cast<size_t>(lens[j - 1]) < seg) break;  // a shorter one ends the run
        }
      }
      sockaddr_in& sa = sc.addrs[n];
      memset(&sa, 0, sizeof sa);
      sa.sin_family = AF_INET;
      sa.sin_addr.s_addr = htonl(addrs[i]);
      sa.sin_port = htons(ports[i]);
      msghdr& h = sc.msgs[n].msg_hdr;
      memset(&h, 0, sizeof h);
      h.msg_name = &sa;
      h.msg_namelen = sizeof sa;
      h.msg_iov = &sc.iovs[k];
      h.msg_iovlen = segs;
      if (segs > 1) {
        h.msg_control = sc.ctrl[n].b;
        h.msg_controllen = CMSG_SPACE(sizeof(uint16_t));
        cmsghdr* c = CMSG_FIRSTHDR(&h);
        c->cmsg_level = SOL_UDP;
        c->cmsg_type = UDP_SEGMENT;
        c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
        uint16_t gso = static_cast<uint16_t>(seg);
        memcpy(CMSG_DATA(c), &gso, sizeof gso);
      }
      sc.first[n] = static_cast<uint32_t>(i);
      sc.entries[n] = static_cast<uint32_t>(segs);
      k += segs;
      n++;
      next = i + segs;
    }
    size_t pos = 0;
    while (pos < n) {
      int r = sendmmsg(fd, sc.msgs.data() + pos, static_cast<unsigned>(n - pos), MSG_DONTWAIT);
      if (r > 0) {
        for (size_t m = pos; m < pos + static_cast<size_t>(r); m++) {
          sent += sc.entries[m];
          if (sc.entries[m] > 1) {
            ctr[kUdpGsoMessages] += 1;
            ctr[kUdpGsoSegments] += sc.entries[m];
          }
        }
        pos += static_cast<size_t>(r);
        continue;
      }
      int err = r < 0 ? errno : EAGAIN;
      if (err == EINTR) continue;
      if (err == EAGAIN || err == EWOULDBLOCK || err == ENOBUFS) {
        stop = true;
        break;
      }
      if (err == EBADF || err == ENOTSOCK) {
        if (sent > 0) return Napi::Number::New(env, static_cast<double>(sent));
        ThrowErrno(env, "sendmmsg", "sendmmsg fd " + std::to_string(fd), err);
        return env.Undefined();
      }
      if (sc.entries[pos] > 1 &&
          (err == EIO || err == EINVAL || err == EMSGSIZE || err == EOPNOTSUPP)) {
        // EIO (udp_send_skb: no checksum offload possible, e.g. an xfrm route) will not
        // change for this socket: plain datagrams from now on. EMSGSIZE/EINVAL concern this
        // run (a segment over the path MTU is EMSGSIZE on 6.18; too many segments, or
        // SO_NO_CHECK, EINVAL): only this run goes plain, where IP may still fragment it.
        // Either way the datagrams are resent, not lost.
        if (err == EIO || err == EOPNOTSUPP) ctr[kUdpGsoDisabled] = 1;
        ctr[kUdpGsoFallbacks] += 1;
        plain_until = sc.first[pos] + sc.entries[pos];
        next = sc.first[pos];
        break;
      }
      // As sendBatch: one refused datagram (or run) is dropped, the rest go on.
      pos++;
    }
  }
  return Napi::Number::New(env, static_cast<double>(sent));
}

// A tunnel super-datagram: one datagram holding tunnel headers and then one inner IPv4/IPv6
// packet larger than the tunnel carries, where a GRO train would hold gso_size-sized
// datagrams. The kernel hands these even to sockets without UDP_GRO: a GSO skb of type
// UDP_TUNNEL|TCPV4 from a kernel VXLAN device, carried unsegmented by a veth with TSO, is not
// "unexpected GSO" to udp_unexpected_gso and reaches the socket whole, with no UDP_GRO control
// message (udp_cmsg_recv reports gso_size for SKB_GSO_UDP_L4 only; both checked on 6.18). It
// is cut as the receiving NIC would have: each datagram the tunnel headers and one inner
// segment, of the kernel's gso_size when it said one (an inner UDP_L4 skb), else of the
// tunnel's inner MTU (tunnelMtu) or, without that, what fits a slot.
struct Tunnel {
  int64_t off;  // bytes of tunnel headers before the inner packet; -1: no tunnel cutting
  size_t mtu;   // inner MTU for segments when the kernel gave no gso_size; 0: fit a slot
};

bool IsTunnelSuper(const uint8_t* d, size_t len, size_t gso, const Tunnel& tun, size_t cap) {
  if (tun.off < 0) return false;
  const size_t t = static_cast<size_t>(tun.off);
  if (len < t + 20) return false;
  const uint8_t* ip = d + t;
  bool whole = false;
  if ((ip[0] >> 4) == 4) whole = static_cast<size_t>(ip[2] << 8 | ip[3]) == len - t;
  else if ((ip[0] >> 4) == 6 && len >= t + 40)
    whole = static_cast<size_t>(ip[4] << 8 | ip[5]) + 40 == len - t;
  if (!whole) return false;
  if (gso > 0) return len > gso;
  return tun.mtu > 0 ? len - t > tun.mtu : len > cap;
}

// The segment size for cutting a tunnel super-datagram: inner headers (as far as they can be
// read; SplitPacket checks them properly) subtracted from the inner MTU or the slot.
size_t TunnelSegment(const uint8_t* inner, size_t inner_len, size_t prefix, const Tunnel& tun,
                     size_t cap) {
  const bool v6 = (inner[0] >> 4) == 6;
  const size_t l3 = v6 ? 40 : static_cast<size_t>(inner[0] & 15) * 4;
  const uint8_t proto = v6 ? inner[6] : inner[9];
  size_t l4 = 8;
  if (proto == 6) {
    if (inner_len < l3 + 13) return 0;
    l4 = static_cast<size_t>(inner[l3 + 12] >> 4) * 4;
  }
  const size_t hlen = l3 + l4;
  const size_t room = tun.mtu > 0 ? tun.mtu : (cap > prefix ? cap - prefix : 0);
  return room > hlen ? std::min<size_t>(room - hlen, 65535) : 0;
}

// Cuts the stage's pending datagrams into slots, resuming where the state says (for a train,
// st[2] is the byte offset in the current datagram; for a tunnel super-datagram, the next inner
// segment). Returns false when the slots ran out (the state then says where to resume).
bool DrainGro(const uint8_t* stage, size_t regions, int32_t* st, const SlabArgs& s,
              int32_t* offs, int32_t* lens, uint32_t* addrs, uint16_t* ports, size_t* got,
              const Tunnel& tun, double* ctr) {
  const int64_t tunnel_off = tun.off;
  if (st[0] == 0) return true;
  const int64_t n = st[0], m0 = st[1], o0 = st[2];
  bool ok = n > 0 && static_cast<uint64_t>(n) <= regions && m0 >= 0 && m0 < n && o0 >= 0;
  for (int64_t j = m0; ok && j < n; j++) {
    const int32_t* d = st + kGroStateHead + j * kGroStatePer;
    ok = d[0] >= -1 && d[0] <= static_cast<int64_t>(kGroRegion) && d[1] >= 0 && d[1] <= 65535 &&
         d[3] >= 0 && d[3] <= 65535 && (d[4] == 0 || d[4] == 1) &&
         (d[4] == 0 || (d[0] > 0 && tunnel_off >= 0 && tunnel_off + 20 <= d[0])) &&
         (j != m0 || d[4] == 1 || o0 <= std::max<int32_t>(d[0], 0));
  }
  if (!ok) {
    ctr[kUdpGroStateRefused] += 1;
    st[0] = st[1] = st[2] = 0;
    return true;
  }
  const size_t cap = s.slot_size - s.headroom;
  for (int64_t j = m0; j < n; j++) {
    const int32_t* d = st + kGroStateHead + j * kGroStatePer;
    const int32_t len = d[0];
    const size_t gso = d[1] > 0 ? static_cast<size_t>(d[1]) : kGroRegion;
    size_t o = j == m0 ? static_cast<size_t>(o0) : 0;
    const uint8_t* base = stage + static_cast<size_t>(j) * kGroRegion;
    if (d[4] == 1) {
      if (*got >= s.max_count) {
        st[1] = static_cast<int32_t>(j);
        st[2] = static_cast<int32_t>(o);
        return false;
      }
      const size_t t = static_cast<size_t>(tunnel_off);
      const uint8_t* inner = base + t;
      const size_t inner_len = static_cast<size_t>(len) - t;
      // The header the receiving NIC's driver would have been handed for this skb; SplitPacket
      // checks it against the inner headers like any other.
      weft::VnetHdr h;
      h.flags = weft::kVnetFlagNeedsCsum;
      const bool v6 = (inner[0] >> 4) == 6;
      const size_t l3 = v6 ? 40 : static_cast<size_t>(inner[0] & 15) * 4;
      const uint8_t proto = v6 ? inner[6] : inner[9];
      h.gso_type = proto == 17 ? weft::kGsoUdpL4 : v6 ? weft::kGsoTcpV6 : weft::kGsoTcpV4;
      h.gso_size = static_cast<uint16_t>(d[1] > 0 ? static_cast<size_t>(d[1])
                                                  : TunnelSegment(inner, inner_len, t, tun, cap));
      h.csum_start = static_cast<uint16_t>(l3);
      h.csum_offset = proto == 17 ? 6 : 16;
      weft::Slab slab{s.buf, s.buf_len, s.slot_size, s.headroom, s.max_count, offs, lens};
      double tctr[weft::kCtrCount] = {};
      weft::SplitResult r = weft::SplitPacket(h, inner, inner_len, static_cast<uint32_t>(o),
                                              &slab, *got, base, t, tctr);
      if (r.refuse != weft::kRefuseNone) {
        const size_t i = (*got)++;
        offs[i] = static_cast<int32_t>(i * s.slot_size + s.headroom);
        lens[i] = -1;
        addrs[i] = static_cast<uint32_t>(d[2]);
        ports[i] = static_cast<uint16_t>(d[3]);
        ctr[kUdpTunnelRefused] += 1;
        continue;
      }
      for (size_t i = *got; i < *got + r.produced; i++) {
        addrs[i] = static_cast<uint32_t>(d[2]);
        ports[i] = static_cast<uint16_t>(d[3]);
      }
      *got += r.produced;
      ctr[kUdpTunnelSegments] += static_cast<double>(r.produced);
      if (r.more) {
        st[1] = static_cast<int32_t>(j);
        st[2] = static_cast<int32_t>(r.next);
        return false;
      }
      continue;
    }
    // A datagram cut short (-1) or empty (0) still takes exactly one slot, as in recvBatch.
    bool once = len <= 0;
    while (once || o < static_cast<size_t>(len)) {
      if (*got >= s.max_count) {
        st[1] = static_cast<int32_t>(j);
        st[2] = static_cast<int32_t>(o);
        return false;
      }
      const size_t i = (*got)++;
      offs[i] = static_cast<int32_t>(i * s.slot_size + s.headroom);
      addrs[i] = static_cast<uint32_t>(d[2]);
      ports[i] = static_cast<uint16_t>(d[3]);
      if (once) {
        lens[i] = len;
        break;
      }
      const size_t sl = std::min(gso, static_cast<size_t>(len) - o);
      if (sl > cap) {
        lens[i] = -1;
        ctr[kUdpGroTruncated] += 1;
      } else {
        memcpy(s.buf + offs[i], base + o, sl);
        lens[i] = static_cast<int32_t>(sl);
      }
      o += sl;
    }
  }
  st[0] = st[1] = st[2] = 0;
  return true;
}

// recvBatch with gro (a socket opened with UDP_GRO): each datagram, possibly a GRO train of
// several with one gso_size (udp_gro_receive; the size arrives in a UDP_GRO control message),
// is received whole into a 64 KB region of stage and cut back into the datagrams the sender
// sent, one per slot, each with the sender's address and port. What does not fit the slots
// waits in stage for the next call (state: see kGroState*).
Napi::Value RecvBatchGro(Napi::Env env, int fd, const SlabArgs& s, int32_t* offs, int32_t* lens,
                         uint32_t* addrs, uint16_t* ports, uint8_t* stage, size_t stage_len,
                         int32_t* st, size_t st_len, const Tunnel& tun, double* ctr) {
  const size_t regions =
      std::min(std::min(stage_len / kGroRegion, (st_len - kGroStateHead) / kGroStatePer),
               kMaxMsgsPerCall);
  UdpScratch& sc = UdpSc(env);
  sc.Reserve(regions, regions);
  size_t got = 0;
  if (!DrainGro(stage, regions, st, s, offs, lens, addrs, ports, &got, tun, ctr))
    return Napi::Number::New(env, static_cast<double>(got));
  while (got < s.max_count) {
    const size_t want = std::min(regions, s.max_count - got);
    for (size_t j = 0; j < want; j++) {
      sc.iovs[j] = {stage + j * kGroRegion, kGroRegion};
      msghdr& h = sc.msgs[j].msg_hdr;
      memset(&h, 0, sizeof h);
      h.msg_name = &sc.addrs[j];
      h.msg_namelen = sizeof(sockaddr_in);
      h.msg_iov = &sc.iovs[j];
      h.msg_iovlen = 1;
      h.msg_control = sc.ctrl[j].b;
      h.msg_controllen = sizeof sc.ctrl[j].b;
      sc.msgs[j].msg_len = 0;
    }
    int r = recvmmsg(fd, sc.msgs.data(), static_cast<unsigned>(want), MSG_DONTWAIT, nullptr);
    if (r < 0) {
      int err = errno;
      if (err == EINTR) continue;
      if (err == EAGAIN || err == EWOULDBLOCK) break;
      if (got > 0) break;
      ThrowErrno(env, "recvmmsg", "recvmmsg fd " + std::to_string(fd), err);
      return env.Undefined();
    }
    for (size_t j = 0; j < static_cast<size_t>(r); j++) {
      msghdr& h = sc.msgs[j].msg_hdr;
      int32_t* d = st + kGroStateHead + j * kGroStatePer;
      int gso = 0;
      for (cmsghdr* c = CMSG_FIRSTHDR(&h); c; c = CMSG_NXTHDR(&h, c)) {
        if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO &&
            c->cmsg_len >= CMSG_LEN(sizeof(int)))
          memcpy(&gso, CMSG_DATA(c), sizeof gso);
      }
      const size_t len = sc.msgs[j].msg_len;
      d[0] = (h.msg_flags & MSG_TRUNC) ? -1 : static_cast<int32_t>(len);
      d[1] = gso > 0 && gso <= 65535 ? gso : 0;
      d[4] = 0;
      if (d[0] > 0 && IsTunnelSuper(stage + j * kGroRegion, len, static_cast<size_t>(d[1]), tun,
                                    s.slot_size - s.headroom)) {
        d[4] = 1;
        ctr[kUdpTunnelSupers] += 1;
      } else if (d[0] > 0 && d[1] > 0 && len > static_cast<size_t>(d[1])) {
        ctr[kUdpGroDatagrams] += 1;
        ctr[kUdpGroSegments] += static_cast<double>((len + d[1] - 1) / d[1]);
      }
      const bool v4 = h.msg_namelen >= sizeof(sockaddr_in) && sc.addrs[j].sin_family == AF_INET;
      d[2] = v4 ? static_cast<int32_t>(ntohl(sc.addrs[j].sin_addr.s_addr)) : 0;
      d[3] = v4 ? ntohs(sc.addrs[j].sin_port) : 0;
    }
    st[0] = r;
    st[1] = 0;
    st[2] = 0;
    if (!DrainGro(stage, regions, st, s, offs, lens, addrs, ports, &got, tun, ctr)) break;
    if (static_cast<size_t>(r) < want) break;
  }
  return Napi::Number::New(env, static_cast<double>(got));
}

UdpScratch& UdpSc(Napi::Env env) {
  AddonData* d = Data(env);
  if (!d->udp) d->udp = std::make_unique<UdpScratch>();
  return *d->udp;
}

// recvBatch(fd, buf, slotSize, headroom, maxCount, offs, lens, addrs, ports
//           [, stage, state, counters[, tunnelHeader[, tunnelMtu]]]) -> count
// With stage/state/counters: the UDP_GRO mode of RecvBatchGro; tunnelHeader (bytes of tunnel
// headers before the inner IP packet, e.g. 22 for VXLAN; -1 or absent: none) turns on the
// cutting of tunnel super-datagrams (IsTunnelSuper), into inner packets of at most tunnelMtu
// bytes when the kernel gave no segment size (0: what fits a slot).
Napi::Value RecvBatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  SlabArgs s;
  int32_t *offs, *lens;
  uint32_t* addrs;
  uint16_t* ports;
  size_t offs_len, lens_len, addrs_len, ports_len;
  if (!ArgFd(info, 0, &fd) || !ArgSlab(info, 1, &s) ||
      !ArgTyped<napi_int32_array>(info, 5, "offs", "Int32Array", &offs, &offs_len) ||
      !ArgTyped<napi_int32_array>(info, 6, "lens", "Int32Array", &lens, &lens_len) ||
      !ArgTyped<napi_uint32_array>(info, 7, "addrs", "Uint32Array", &addrs, &addrs_len) ||
      !ArgTyped<napi_uint16_array>(info, 8, "ports", "Uint16Array", &ports, &ports_len) ||
      !CheckArrayLen(env, "offs", offs_len, s.max_count) ||
      !CheckArrayLen(env, "lens", lens_len, s.max_count) ||
      !CheckArrayLen(env, "addrs", addrs_len, s.max_count) ||
      !CheckArrayLen(env, "ports", ports_len, s.max_count))
    return env.Undefined();
  if (info.Length() > 9 && !info[9].IsUndefined()) {
    uint8_t* stage;
    size_t stage_len, st_len;
    int32_t* st;
    double* ctr;
    if (!ArgTyped<napi_uint8_array>(info, 9, "stage", "Buffer or Uint8Array", &stage,
                                    &stage_len) ||
        !ArgTyped<napi_int32_array>(info, 10, "state", "Int32Array", &st, &st_len) ||
        !ArgCounters(info, 11, kUdpCtrCount, &ctr))
      return env.Undefined();
    int64_t tunnel_off = -1, tunnel_mtu = 0;
    if ((info.Length() > 12 && !info[12].IsUndefined() &&
         !ArgInt(info, 12, "tunnelHeader", -1, 1024, &tunnel_off)) ||
        (info.Length() > 13 && !info[13].IsUndefined() &&
         !ArgInt(info, 13, "tunnelMtu", 0, 65535, &tunnel_mtu)))
      return env.Undefined();
    Tunnel tun{tunnel_off, static_cast<size_t>(tunnel_mtu)};
    if (stage_len < kGroRegion || st_len < kGroStateHead + kGroStatePer) {
      ThrowRange(env, "stage needs at least " + std::to_string(kGroRegion) +
                          " bytes and state " + std::to_string(kGroStateHead + kGroStatePer) +
                          " elements");
      return env.Undefined();
    }
    return RecvBatchGro(env, fd, s, offs, lens, addrs, ports, stage, stage_len, st, st_len, tun,
                        ctr);
  }

  Scratch& sc = Data(env)->scratch;
  const size_t cap = s.slot_size - s.headroom;
  size_t got = 0;
  while (got < s.max_count) {
    size_t want = std::min(s.max_count - got, kMaxMsgsPerCall);
    sc.Reserve(want);
    for (size_t j = 0; j < want; j++) {
      size_t slot = got + j;
      sc.iovs[j].iov_base = s.buf + slot * s.slot_size + s.headroom;
      sc.iovs[j].iov_len = cap;
      msghdr& h = sc.msgs[j].msg_hdr;
      h.msg_name = &sc.addrs[j];
      h.msg_namelen = sizeof(sockaddr_in);  // value-result: the kernel overwrites it
      h.msg_iov = &sc.iovs[j];
      h.msg_iovlen = 1;
      h.msg_control = nullptr;
      h.msg_controllen = 0;
      h.msg_flags = 0;
      sc.msgs[j].msg_len = 0;
    }
    int r = recvmmsg(fd, sc.msgs.data(), static_cast<unsigned>(want), MSG_DONTWAIT, nullptr);
    if (r < 0) {
      int err = errno;
      if (err == EINTR) continue;
      if (err == EAGAIN || err == EWOULDBLOCK) break;
      if (got > 0) break;
      ThrowErrno(env, "recvmmsg", "recvmmsg fd " + std::to_string(fd), err);
      return env.Undefined();
    }
    for (size_t j = 0; j < static_cast<size_t>(r); j++) {
      size_t i = got + j;
      const msghdr& h = sc.msgs[j].msg_hdr;
      offs[i] = static_cast<int32_t>(i * s.slot_size + s.headroom);
      // MSG_TRUNC: the datagram was larger than the slot and the kernel dropped the rest
      // (udp_recvmsg, raw_recvmsg); -1 makes the caller count a drop instead of parsing a
      // fragment.
      lens[i] = (h.msg_flags & MSG_TRUNC) ? -1 : static_cast<int32_t>(sc.msgs[j].msg_len);
      if (h.msg_namelen >= sizeof(sockaddr_in) && sc.addrs[j].sin_family == AF_INET) {
        addrs[i] = ntohl(sc.addrs[j].sin_addr.s_addr);
        ports[i] = ntohs(sc.addrs[j].sin_port);
      } else {
        addrs[i] = 0;
        ports[i] = 0;
      }
    }
    got += static_cast<size_t>(r);
    // Fewer than asked: the receive queue is empty (or an error is parked in sk_err, which
    // the next call reports), so another syscall now would only return EAGAIN.
    if (static_cast<size_t>(r) < want) break;
  }
  return Napi::Number::New(env, static_cast<double>(got));
}

// sendBatch(fd, buf, offs, lens, addrs, ports, count[, gso, counters]) -> sent
// With gso true: SendBatchGso (counters: the socket's UDP counters, also its fallback flag).
Napi::Value SendBatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  uint8_t* buf;
  size_t buf_len, offs_len, lens_len, addrs_len, ports_len;
  int32_t *offs, *lens;
  uint32_t* addrs;
  uint16_t* ports;
  int64_t count;
  if (!ArgFd(info, 0, &fd) || !ArgBytes(info, 1, &buf, &buf_len) ||
      !ArgTyped<napi_int32_array>(info, 2, "offs", "Int32Array", &offs, &offs_len) ||
      !ArgTyped<napi_int32_array>(info, 3, "lens", "Int32Array", &lens, &lens_len) ||
      !ArgTyped<napi_uint32_array>(info, 4, "addrs", "Uint32Array", &addrs, &addrs_len) ||
      !ArgTyped<napi_uint16_array>(info, 5, "ports", "Uint16Array", &ports, &ports_len) ||
      !ArgInt(info, 6, "count", 0, INT32_MAX, &count) ||
      !CheckArrayLen(env, "offs", offs_len, count) ||
      !CheckArrayLen(env, "lens", lens_len, count) ||
      !CheckArrayLen(env, "addrs", addrs_len, count) ||
      !CheckArrayLen(env, "ports", ports_len, count) ||
      !CheckDescriptors(env, buf_len, offs, lens, count))
    return env.Undefined();
  if (info.Length() > 7 && !info[7].IsUndefined()) {
    bool gso;
    double* ctr;
    if (!ArgBool(info, 7, "gso", &gso) || !ArgCounters(info, 8, kUdpCtrCount, &ctr))
      return env.Undefined();
    if (gso)
      return SendBatchGso(env, fd, buf, offs, lens, addrs, ports, static_cast<size_t>(count),
                          ctr);
  }

  Scratch& sc = Data(env)->scratch;
  size_t sent = 0;
  size_t next = 0;  // next descriptor not yet packed into a chunk
  bool stop = false;
  while (!stop && next < static_cast<size_t>(count)) {
    // Pack up to kMaxMsgsPerCall non-empty descriptors into one chunk.
    sc.Reserve(std::min(static_cast<size_t>(count) - next, kMaxMsgsPerCall));
    size_t n = 0;
    while (next < static_cast<size_t>(count) && n < kMaxMsgsPerCall) {
      size_t i = next++;
      if (lens[i] <= 0) continue;
      sockaddr_in& sa = sc.addrs[n];
      memset(&sa, 0, sizeof sa);
      sa.sin_family = AF_INET;
      sa.sin_addr.s_addr = htonl(addrs[i]);
      sa.sin_port = htons(ports[i]);
      sc.iovs[n].iov_base = buf + offs[i];
      sc.iovs[n].iov_len = static_cast<size_t>(lens[i]);
      msghdr& h = sc.msgs[n].msg_hdr;
      h.msg_name = &sa;
      h.msg_namelen = sizeof sa;
      h.msg_iov = &sc.iovs[n];
      h.msg_iovlen = 1;
      h.msg_control = nullptr;
      h.msg_controllen = 0;
      h.msg_flags = 0;
      n++;
    }
    size_t pos = 0;
    while (pos < n) {
      int r = sendmmsg(fd, sc.msgs.data() + pos, static_cast<unsigned>(n - pos), MSG_DONTWAIT);
      if (r > 0) {
        sent += static_cast<size_t>(r);
        pos += static_cast<size_t>(r);
        continue;
      }
      int err = r < 0 ? errno : EAGAIN;
      if (err == EINTR) continue;
      // Socket buffer full (EAGAIN) or the device queue pushed back (ENOBUFS): the rest of
      // the batch would fail the same way; the caller counts them as drops.
      if (err == EAGAIN || err == EWOULDBLOCK || err == ENOBUFS) {
        stop = true;
        break;
      }
      if (err == EBADF || err == ENOTSOCK) {
        if (sent > 0) return Napi::Number::New(env, static_cast<double>(sent));
        ThrowErrno(env, "sendmmsg", "sendmmsg fd " + std::to_string(fd), err);
        return env.Undefined();
      }
      // sendmmsg reports an error only when the first message fails (later failures end the
      // call early with a short count, and recur here as the first message of the next call):
      // skip that one datagram, e.g. EMSGSIZE or ENETUNREACH, and send the rest.
      pos++;
    }
  }
  return Napi::Number::New(env, static_cast<double>(sent));
}

// close(fd)
Napi::Value Close(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!ArgFd(info, 0, &fd)) return env.Undefined();
  // Linux releases the descriptor even when close() reports EINTR, so retrying could close a
  // descriptor another thread has just been given (close(2), "Dealing with error returns").
  if (close(fd) < 0 && errno != EINTR) {
    ThrowErrno(env, "close", "close fd " + std::to_string(fd), errno);
    return env.Undefined();
  }
  return env.Undefined();
}

// ---------------------------------------------------------------------------------------------
// Readiness: a uv_poll_t on Node's event loop.
//
// Lifetimes: the uv_poll_t must stay allocated until libuv's close callback runs, which is
// after close() returns, while the JS handle object may be collected at any time after it is
// closed. So the uv side (PollState) and the JS side (Poller) are separate allocations that
// point at each other until close() cuts the link; the close callback then frees PollState
// without touching JS.

class Poller;

struct PollState {
  uv_poll_t handle;
  Poller* owner;  // null once detached
};

void OnPollClosed(uv_handle_t* h) { delete static_cast<PollState*>(h->data); }

class Poller : public Napi::ObjectWrap<Poller> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "PollHandle",
                       {InstanceMethod<&Poller::Start>("start"),
                        InstanceMethod<&Poller::Stop>("stop"),
                        InstanceMethod<&Poller::CloseMethod>("close")});
  }

  // new PollHandle(fd, onReadable); only pollStart constructs these.
  explicit Poller(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Poller>(info) {
    Napi::Env env = info.Env();
    env_ = env;
    if (!ArgFd(info, 0, &fd_)) return;
    if (info.Length() < 2 || !info[1].IsFunction()) {
      ThrowType(env, "onReadable must be a function");
      return;
    }
    uv_loop_t* loop = nullptr;
    if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) {
      Napi::Error::New(env, "no libuv event loop for this environment")
          .ThrowAsJavaScriptException();
      return;
    }
    auto* st = new PollState();
    st->handle.data = st;
    st->owner = this;
    int rc = uv_poll_init(loop, &st->handle, fd_);
    if (rc < 0) {
      // uv_poll_init fails before registering the handle with the loop, so no uv_close.
      delete st;
      ThrowUv(env, "uv_poll_init", rc);
      return;
    }
    state_ = st;
    napi_add_env_cleanup_hook(env, &Poller::OnEnvTeardown, this);
    hook_added_ = true;
    callback_ = Napi::Persistent(info[1].As<Napi::Function>());
    napi_async_init(env, info.This(), Napi::String::New(env, "weft:poll"), &async_ctx_);
    rc = uv_poll_start(&state_->handle, UV_READABLE, &Poller::OnPoll);
    if (rc < 0) {
      Release();
      ThrowUv(env, "uv_poll_start", rc);
      return;
    }
    // An open handle must survive even if JS drops every reference to it, or its callback and
    // this object would be collected while libuv still fires on the fd.
    Ref();
    ref_held_ = true;
  }

  ~Poller() override {
    // Only reached after close() (the strong reference held while open prevents collection)
    // or during environment teardown; either way, release whatever is still attached.
    if (state_) {
      state_->owner = nullptr;
      uv_poll_stop(&state_->handle);
      uv_close(reinterpret_cast<uv_handle_t*>(&state_->handle), OnPollClosed);
      state_ = nullptr;
    }
    if (hook_added_ && !tearing_down_)
      napi_remove_env_cleanup_hook(env_, &Poller::OnEnvTeardown, this);
    if (async_ctx_ && !tearing_down_) napi_async_destroy(env_, async_ctx_);
  }

 private:
  static void ThrowUv(Napi::Env env, const char* what, int rc) {
    Napi::Error e = Napi::Error::New(env, std::string(what) + ": " + uv_strerror(rc));
    e.Set("code", Napi::String::New(env, uv_err_name(rc)));
    e.ThrowAsJavaScriptException();
  }

  Napi::Value Start(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!state_) {
      Napi::Error::New(env, "poll handle is closed").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    int rc = uv_poll_start(&state_->handle, UV_READABLE, &Poller::OnPoll);
    if (rc < 0) ThrowUv(env, "uv_poll_start", rc);
    return env.Undefined();
  }

  Napi::Value Stop(const Napi::CallbackInfo& info) {
    if (state_) uv_poll_stop(&state_->handle);
    return info.Env().Undefined();
  }

  Napi::Value CloseMethod(const Napi::CallbackInfo& info) {
    Release();
    return info.Env().Undefined();
  }

  // Idempotent: detaches the uv handle (freed later by its close callback) and drops the JS
  // references so this object can be collected.
  void Release() {
    if (state_) {
      state_->owner = nullptr;
      uv_poll_stop(&state_->handle);
      uv_close(reinterpret_cast<uv_handle_t*>(&state_->handle), OnPollClosed);
      state_ = nullptr;
    }
    if (hook_added_) {
      napi_remove_env_cleanup_hook(env_, &Poller::OnEnvTeardown, this);
      hook_added_ = false;
    }
    if (!callback_.IsEmpty()) callback_.Reset();
    if (async_ctx_) {
      napi_async_destroy(env_, async_ctx_);
      async_ctx_ = nullptr;
    }
    if (ref_held_) {
      ref_held_ = false;
      Unref();
    }
  }

  // Environment teardown (a worker thread ending, or Node freeing its main environment): the
  // loop is about to be closed, so the uv handle must be closed now; JS references are left
  // for napi's own teardown, which runs after this hook (hooks run in reverse order of
  // registration, and napi registered its hook when the module loaded).
  static void OnEnvTeardown(void* arg) {
    Poller* self = static_cast<Poller*>(arg);
    self->tearing_down_ = true;
    self->hook_added_ = false;
    if (self->state_) {
      self->state_->owner = nullptr;
      uv_poll_stop(&self->state_->handle);
      uv_close(reinterpret_cast<uv_handle_t*>(&self->state_->handle), OnPollClosed);
      self->state_ = nullptr;
    }
  }

  static void OnPoll(uv_poll_t* h, int status, int /*events*/) {
    PollState* st = static_cast<PollState*>(h->data);
    if (st->owner) st->owner->Fire(status);
  }

  void Fire(int status) {
    napi_env env = env_;
    Napi::HandleScope scope(env_);
    napi_value argv[1];
    size_t argc = 0;
    if (status < 0) {
      // libuv has already stopped the handle (it does so on POLLERR, e.g. when the TUN device
      // is deleted under an open fd); pass the error so the caller can close or restart.
      Napi::Error e = Napi::Error::New(
          env_, "poll fd " + std::to_string(fd_) + ": " + uv_strerror(status));
      e.Set("code", Napi::String::New(env_, uv_err_name(status)));
      argv[0] = e.Value();
      argc = 1;
    }
    napi_value recv = Value();
    napi_value fn = callback_.Value();
    // Everything after this call must avoid `this`: the callback may close this handle, and
    // the object is then free to be collected.
    //
    // napi_make_callback (not napi_call_function): it enters the handle's async context and,
    // on the way out, runs process.nextTick callbacks and microtasks, as Node does for its own
    // I/O callbacks.
    napi_value result;
    napi_status rc = napi_make_callback(env, async_ctx_, recv, fn, argc, argv, &result);
    if (rc != napi_ok) {
      // No JS frame is below a libuv callback to catch this; without napi_fatal_exception the
      // error would sit pending in napi and vanish. This routes it to process 'uncaughtException'
      // (and, without a handler, the usual crash with the stack printed). A worker being
      // terminated also fails the call, but with nothing pending: there is nothing to report.
      bool pending = false;
      napi_value exc;
      if (napi_is_exception_pending(env, &pending) == napi_ok && pending &&
          napi_get_and_clear_last_exception(env, &exc) == napi_ok)
        napi_fatal_exception(env, exc);
    }
  }

  napi_env env_ = nullptr;
  int fd_ = -1;
  PollState* state_ = nullptr;
  Napi::FunctionReference callback_;
  napi_async_context async_ctx_ = nullptr;
  bool hook_added_ = false;
  bool ref_held_ = false;
  bool tearing_down_ = false;
};

// schedYield(): sched_yield(2). A busy-polling daemon calls it between empty polls so that a
// task woken on its CPU (the pod's ping, ksoftirqd, the peer daemon on a 2-CPU box) runs now
// rather than at the next scheduler tick: a spinner that never sleeps is otherwise only
// preempted when its slice ends, which puts milliseconds, not microseconds, on a round trip.
Napi::Value SchedYield(const Napi::CallbackInfo& info) {
  sched_yield();
  return info.Env().Undefined();
}

// pollStart(fd, onReadable) -> { start(), stop(), close() }
Napi::Value PollStart(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  napi_value args[2] = {info.Length() > 0 ? info[0] : env.Undefined(),
                        info.Length() > 1 ? info[1] : env.Undefined()};
  Napi::Object obj = Data(env)->poller_ctor.New({args[0], args[1]});
  if (env.IsExceptionPending()) return env.Undefined();
  return obj;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  auto* data = new AddonData();
  data->poller_ctor = Napi::Persistent(Poller::Define(env));
  env.SetInstanceData(data);

  exports.Set("tunOpen", Napi::Function::New(env, TunOpen, "tunOpen"));
  exports.Set("udpOpen", Napi::Function::New(env, UdpOpen, "udpOpen"));
  exports.Set("rawOpen", Napi::Function::New(env, RawOpen, "rawOpen"));
  exports.Set("localPort", Napi::Function::New(env, LocalPort, "localPort"));
  exports.Set("readPackets", Napi::Function::New(env, ReadPackets, "readPackets"));
  exports.Set("writePackets", Napi::Function::New(env, WritePackets, "writePackets"));
  exports.Set("tunReadVnet", Napi::Function::New(env, TunReadVnet, "tunReadVnet"));
  exports.Set("tunWrite", Napi::Function::New(env, TunWrite, "tunWrite"));
  exports.Set("gsoSplit", Napi::Function::New(env, GsoSplit, "gsoSplit"));
  exports.Set("tcpCoalesce", Napi::Function::New(env, TcpCoalesce, "tcpCoalesce"));
  exports.Set("recvBatch", Napi::Function::New(env, RecvBatch, "recvBatch"));
  exports.Set("sendBatch", Napi::Function::New(env, SendBatch, "sendBatch"));
  exports.Set("pollStart", Napi::Function::New(env, PollStart, "pollStart"));
  exports.Set("close", Napi::Function::New(env, Close, "close"));
  exports.Set("schedYield", Napi::Function::New(env, SchedYield, "schedYield"));
  return exports;
}

}  // namespace

NODE_API_MODULE(weft_native, Init)
