// weft's offload core: the byte work behind TUN segmentation offload, with no napi and no
// syscalls, so the addon, the unit tests (through pure entry points) and a sanitizer harness
// all run the same code.
//
//   - Split (TUN read side): the kernel hands a TUN opened with IFF_VNET_HDR and granted
//     TUNSETOFFLOAD one super-packet of up to 64 KB behind a virtio-net header; Split turns it
//     into the ordinary packets a NIC would have put on the wire, one per slab slot.
//   - Coalesce (TUN write side): consecutive TCP/IPv4 segments of one flow in a batch become one
//     super-packet the kernel takes with a virtio-net GSO header, as GRO would have built it.
//   - Partial checksums: packets whose checksum field holds only the pseudo-header sum
//     (CHECKSUM_PARTIAL never finished, e.g. behind a kernel VXLAN peer on a veth) are finished
//     before the kernel's TCP/UDP receive path sees them.
//
// Nothing here trusts its input: every header field is checked against the bytes actually
// present, and a refusal names its reason (counted by the caller).

#ifndef WEFT_NATIVE_OFFLOAD_H_
#define WEFT_NATIVE_OFFLOAD_H_

#include <stddef.h>
#include <stdint.h>

// include/uapi/linux/virtio_net.h and if_tun.h of newer kernels; Debian 12's 6.1 headers lack
// the UDP segmentation offload names.
#ifndef VIRTIO_NET_HDR_GSO_UDP_L4
#define VIRTIO_NET_HDR_GSO_UDP_L4 5
#endif
#ifndef TUN_F_USO4
#define TUN_F_USO4 0x20
#endif
#ifndef TUN_F_USO6
#define TUN_F_USO6 0x40
#endif

namespace weft {

// struct virtio_net_hdr (virtio spec 1.x section 5.1.6, legacy layout without num_buffers):
// 10 bytes, 16-bit fields in the device's endianness, little-endian for a TUN on x86/arm64
// (tun_is_little_endian) and decoded explicitly here.
constexpr size_t kVnetHdrLen = 10;
constexpr uint8_t kVnetFlagNeedsCsum = 1;  // VIRTIO_NET_HDR_F_NEEDS_CSUM
constexpr uint8_t kVnetFlagDataValid = 2;  // VIRTIO_NET_HDR_F_DATA_VALID
constexpr uint8_t kGsoNone = 0;
constexpr uint8_t kGsoTcpV4 = 1;
constexpr uint8_t kGsoUdp = 3;  // UFO; never negotiated, always refused
constexpr uint8_t kGsoTcpV6 = 4;
constexpr uint8_t kGsoUdpL4 = VIRTIO_NET_HDR_GSO_UDP_L4;
constexpr uint8_t kGsoEcn = 0x80;

struct VnetHdr {
  uint8_t flags = 0;
  uint8_t gso_type = 0;
  uint16_t hdr_len = 0;
  uint16_t gso_size = 0;
  uint16_t csum_start = 0;
  uint16_t csum_offset = 0;
};

void DecodeVnetHdr(const uint8_t* p, VnetHdr* h);
void EncodeVnetHdr(const VnetHdr& h, uint8_t* p);

// Internet checksum (RFC 1071): SumBytes accumulates 16-bit big-endian words (an odd final byte
// padded with zero) into a 64-bit accumulator that cannot overflow for any packet size; Fold
// reduces it to 16 bits without complementing.
uint64_t SumBytes(const uint8_t* p, size_t len, uint64_t acc);
uint16_t Fold(uint64_t acc);
// The TCP/UDP pseudo-header (RFC 793 section 3.1, RFC 768; RFC 8200 section 8.1 for IPv6),
// unfolded. addr_len is 4 or 16.
uint64_t PseudoSum(const uint8_t* src, const uint8_t* dst, size_t addr_len, uint8_t proto,
                   uint32_t l4_len);

// Counters, a cumulative array of doubles shared with JS (layout mirrored in src/io/native.ts,
// TUN_COUNTER). The core only ever adds to them.
enum Counter : int {
  kCtrSuperRead = 0,        // GSO super-packets read from the TUN
  kCtrSegmentsOut,          // ordinary packets produced from them
  kCtrCsumCompleted,        // GSO_NONE packets whose NEEDS_CSUM sum was finished
  kCtrPacketsRead,          // every read (super, plain or refused)
  kCtrRefusedFirst,         // first of kRefuseCount per-reason refusal counters
  kCtrCoalescedWrites = kCtrRefusedFirst + 16,  // super-packets written
  kCtrSegmentsMerged,       // segments that went into them
  kCtrPlainWrites,          // packets written as they were
  kCtrPartialFixed,         // TCP/UDP packets whose pseudo-header-only checksum was finished
  kCtrWriteErrors,          // writes the kernel refused (dropped)
  kCtrTruncatedReads,       // reads longer than the read buffer (dropped)
  kCtrCount
};

enum Refuse : int {
  kRefuseNone = 0,
  kRefuseShort,       // fewer bytes than a virtio-net header plus an IP header
  kRefuseFlags,       // flags other than NEEDS_CSUM/DATA_VALID, or GSO without NEEDS_CSUM
  kRefuseGsoType,     // unknown gso_type, UFO, or the ECN bit (TUN_F_TSO_ECN never granted)
  kRefuseHdrLen,      // hdr_len beyond the packet
  kRefuseGsoSize,     // gso_size 0, or no payload to segment
  kRefuseCsumOffset,  // csum_start/csum_offset outside the packet or not at the L4 checksum
  kRefuseIpHeader,    // version/IHL/total length inconsistent with the bytes read, fragment
  kRefuseProtocol,    // IP protocol does not match gso_type
  kRefuseL4Header,    // TCP data offset or UDP length inconsistent
  kRefuseSlotTooSmall,  // one segment does not fit a slot
  kRefuseState,       // continuation state not consistent with the buffer
  kRefuseCount
};
static_assert(kRefuseCount <= 16, "refusal counters reserve 16 slots");

// A slab as the addon's batch calls describe it: slot i at i*slot_size + headroom, at most
// slot_size - headroom bytes of packet.
struct Slab {
  uint8_t* buf;
  size_t buf_len;
  size_t slot_size;
  size_t headroom;
  size_t max_count;  // slots usable, max_count * slot_size <= buf_len (checked by the caller)
  int32_t* offs;
  int32_t* lens;
};

struct SplitResult {
  size_t produced = 0;   // packets written into slots [first_slot, first_slot + produced)
  bool more = false;     // the slots ran out: call again with first_seg = next
  uint32_t next = 0;
  int refuse = kRefuseNone;
};

// Splits one TUN read (virtio-net header + packet, src_len bytes) into slots starting at
// first_slot, beginning with segment first_seg (non-zero only when resuming). A refusal
// produces nothing and counts one refusal; the caller drops the read.
SplitResult Split(const uint8_t* src, size_t src_len, uint32_t first_seg, Slab* slab,
                  size_t first_slot, double* ctr);

// Split for a header already decoded and a packet not behind it, each output packet led by
// prefix_len bytes of prefix (the tunnel headers of a UDP tunnel super-datagram, which every
// datagram cut from it repeats). Split is SplitPacket with no prefix; refusals and counters as
// there, except that kCtrPacketsRead is Split's alone.
SplitResult SplitPacket(const VnetHdr& h, const uint8_t* pkt, size_t len, uint32_t first_seg,
                        Slab* slab, size_t first_slot, const uint8_t* prefix, size_t prefix_len,
                        double* ctr);

// If the IPv4 TCP or UDP packet's checksum does not verify but its field holds exactly the
// folded pseudo-header sum (the CHECKSUM_PARTIAL seed), writes the finished checksum and
// returns true. Everything else is left as it is.
bool FixPartialChecksum(uint8_t* pkt, size_t len);

// The coalescer's plan for one batch: write units in output order (the order of each unit's
// first packet). Unit u's packets are batch indices head[u], next[head[u]], ... (count[u] of
// them, the chain ending in kEnd). A unit of one packet is written as it is behind an all-zero
// virtio-net header; with more, hdr[u] is its GSO header, the first packet's headers have been
// patched for the merged length, and each later packet contributes only its payload, from
// payload_off[u] bytes in.
constexpr uint32_t kEnd = 0xffffffffu;
struct CoalescePlan {
  size_t cap = 0;  // batch entries the arrays below hold (every array has cap elements)
  size_t units = 0;
  uint32_t* head = nullptr;
  uint32_t* tail = nullptr;
  uint32_t* count = nullptr;
  uint16_t* payload_off = nullptr;
  VnetHdr* hdr = nullptr;
  uint32_t* next = nullptr;  // indexed by batch entry
};

// Plans the batch (offs/lens into buf, lens <= 0 skipped; count <= plan->cap) and patches
// merged groups' first headers in place; finishes pseudo-header-only checksums in place. With
// merge false every packet becomes its own unit (the path for a TUN without offloads).
// offs/lens must already be checked against the buffer.
void Coalesce(uint8_t* buf, const int32_t* offs, const int32_t* lens, size_t count, bool merge,
              CoalescePlan* plan, double* ctr);

// Segments per super-packet: bounds a write unit's iovecs (header, first packet, 63 payloads);
// at MSS-sized segments the 64 KB total binds long before this.
constexpr size_t kMaxMergeSegments = 64;

}  // namespace weft

#endif  // WEFT_NATIVE_OFFLOAD_H_
