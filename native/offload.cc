// weft's offload core (see offload.h). Kernel behaviour matched is named where it matters:
// tcp_gso_segment/__udp_gso_segment for Split, tcp_gro_receive/inet_gro_receive for Coalesce,
// virtio_net_hdr_to_skb/virtio_net_hdr_from_skb for the header's meaning.

#include "offload.h"

#include <string.h>

namespace weft {
namespace {

inline uint16_t Get16(const uint8_t* p) { return static_cast<uint16_t>((p[0] << 8) | p[1]); }
inline void Put16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}
inline uint32_t Get32(const uint8_t* p) {
  return (static_cast<uint32_t>(p[0]) << 24) | (static_cast<uint32_t>(p[1]) << 16) |
         (static_cast<uint32_t>(p[2]) << 8) | p[3];
}
inline void Put32(uint8_t* p, uint32_t v) {
  Put16(p, static_cast<uint16_t>(v >> 16));
  Put16(p + 2, static_cast<uint16_t>(v));
}
inline uint16_t GetLe16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
inline void PutLe16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v);
  p[1] = static_cast<uint8_t>(v >> 8);
}

constexpr uint8_t kProtoTcp = 6;
constexpr uint8_t kProtoUdp = 17;
constexpr uint8_t kTcpFin = 0x01, kTcpPsh = 0x08, kTcpAck = 0x10, kTcpCwr = 0x80;

// The IP layer of a packet as this file needs it, after checking it against the bytes present.
struct L3 {
  int version;
  size_t l3len;       // IPv4 IHL * 4, or 40 for IPv6 (extension headers are not followed)
  uint8_t proto;      // IPv4 protocol / IPv6 next header
  const uint8_t* src;
  const uint8_t* dst;
  size_t addr_len;
};

// Parses an IPv4 or IPv6 header whose length fields must describe exactly `len` bytes (a TUN
// read holds exactly one packet, and a packet handed to the TUN must be one), not a fragment.
bool ParseL3(const uint8_t* p, size_t len, L3* l3) {
  if (len < 1) return false;
  int v = p[0] >> 4;
  if (v == 4) {
    if (len < 20) return false;
    size_t ihl = static_cast<size_t>(p[0] & 0x0f) * 4;
    if (ihl < 20 || ihl > len) return false;
    if (Get16(p + 2) != len) return false;
    if ((Get16(p + 6) & 0x3fff) != 0) return false;  // MF or a fragment offset
    *l3 = {4, ihl, p[9], p + 12, p + 16, 4};
    return true;
  }
  if (v == 6) {
    if (len < 40) return false;
    // Payload length 0 means a jumbogram (RFC 2675), which needs a hop-by-hop header.
    if (static_cast<size_t>(Get16(p + 4)) + 40 != len) return false;
    *l3 = {6, 40, p[6], p + 8, p + 24, 16};
    return true;
  }
  return false;
}

// Length of the TCP (data offset) or UDP header at l4, or 0 if it does not fit l4_len.
size_t L4HeaderLen(uint8_t proto, const uint8_t* l4, size_t l4_len) {
  if (proto == kProtoTcp) {
    if (l4_len < 20) return 0;
    size_t doff = static_cast<size_t>(l4[12] >> 4) * 4;
    return doff >= 20 && doff <= l4_len ? doff : 0;
  }
  if (proto == kProtoUdp) {
    if (l4_len < 8 || Get16(l4 + 4) != l4_len) return 0;
    return 8;
  }
  return 0;
}

inline uint16_t CsumOffsetOf(uint8_t proto) { return proto == kProtoTcp ? 16 : 6; }

void SetIpv4HeaderChecksum(uint8_t* ip, size_t ihl) {
  Put16(ip + 10, 0);
  Put16(ip + 10, static_cast<uint16_t>(~Fold(SumBytes(ip, ihl, 0))));
}

// The full L4 checksum of l4[0, l4_len) with its field at csum_off zeroed first. A UDP sum of
// 0 is sent as 0xffff, since 0 means "no checksum" (RFC 768).
void SetL4Checksum(const L3& l3, uint8_t* l4, size_t l4_len) {
  uint8_t* field = l4 + CsumOffsetOf(l3.proto);
  Put16(field, 0);
  uint64_t s = PseudoSum(l3.src, l3.dst, l3.addr_len, l3.proto, static_cast<uint32_t>(l4_len));
  uint16_t c = static_cast<uint16_t>(~Fold(SumBytes(l4, l4_len, s)));
  if (c == 0 && l3.proto == kProtoUdp) c = 0xffff;
  Put16(field, c);
}

enum CsumState { kCsumValid, kCsumFixed, kCsumBad };

// Verifies the TCP/UDP checksum; a failing one whose field equals the folded pseudo-header sum
// is the CHECKSUM_PARTIAL seed (__tcp_v4_send_check/udp4_hwcsum store exactly that and leave
// the rest to the NIC), so it is finished here as the NIC would have. The sum of the packet is
// taken once: zeroing the field equals adding the seed's one's complement.
CsumState VerifyOrFix(const L3& l3, uint8_t* l4, size_t l4_len) {
  uint8_t* field = l4 + CsumOffsetOf(l3.proto);
  uint16_t have = Get16(field);
  if (l3.proto == kProtoUdp && have == 0 && l3.version == 4) return kCsumValid;  // RFC 768
  uint64_t pseudo =
      PseudoSum(l3.src, l3.dst, l3.addr_len, l3.proto, static_cast<uint32_t>(l4_len));
  uint64_t all = SumBytes(l4, l4_len, pseudo);
  if (Fold(all) == 0xffff) return kCsumValid;
  if (have != Fold(pseudo)) return kCsumBad;
  uint16_t c = static_cast<uint16_t>(~Fold(all + static_cast<uint16_t>(~have)));
  if (c == 0 && l3.proto == kProtoUdp) c = 0xffff;
  Put16(field, c);
  return kCsumFixed;
}

}  // namespace

void DecodeVnetHdr(const uint8_t* p, VnetHdr* h) {
  h->flags = p[0];
  h->gso_type = p[1];
  h->hdr_len = GetLe16(p + 2);
  h->gso_size = GetLe16(p + 4);
  h->csum_start = GetLe16(p + 6);
  h->csum_offset = GetLe16(p + 8);
}

void EncodeVnetHdr(const VnetHdr& h, uint8_t* p) {
  p[0] = h.flags;
  p[1] = h.gso_type;
  PutLe16(p + 2, h.hdr_len);
  PutLe16(p + 4, h.gso_size);
  PutLe16(p + 6, h.csum_start);
  PutLe16(p + 8, h.csum_offset);
}

// Sums native-endian 32-bit words and swaps once at the end: the one's complement sum is
// independent of byte order up to that final swap (RFC 1071 section 2(B)). Every caller starts
// a region at an even offset from the start of what the checksum covers.
uint64_t SumBytes(const uint8_t* p, size_t len, uint64_t acc) {
  uint64_t s = 0;
  while (len >= 16) {
    uint32_t w[4];
    memcpy(w, p, 16);
    s += static_cast<uint64_t>(w[0]) + w[1] + w[2] + w[3];
    p += 16;
    len -= 16;
  }
  while (len >= 4) {
    uint32_t w;
    memcpy(&w, p, 4);
    s += w;
    p += 4;
    len -= 4;
  }
  if (len >= 2) {
    uint16_t w;
    memcpy(&w, p, 2);
    s += w;
    p += 2;
    len -= 2;
  }
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  if (len) s += p[0];
  uint16_t f = Fold(s);
  return acc + static_cast<uint16_t>((f >> 8) | (f << 8));
#else
  if (len) s += static_cast<uint64_t>(p[0]) << 8;
  return acc + Fold(s);
#endif
}

uint16_t Fold(uint64_t acc) {
  while (acc >> 16) acc = (acc & 0xffff) + (acc >> 16);
  return static_cast<uint16_t>(acc);
}

uint64_t PseudoSum(const uint8_t* src, const uint8_t* dst, size_t addr_len, uint8_t proto,
                   uint32_t l4_len) {
  uint64_t s = SumBytes(src, addr_len, 0);
  s = SumBytes(dst, addr_len, s);
  return s + proto + (l4_len >> 16) + (l4_len & 0xffff);
}

SplitResult Split(const uint8_t* src, size_t src_len, uint32_t first_seg, Slab* slab,
                  size_t first_slot, double* ctr) {
  SplitResult r;
  // The caller hands over a free slot; without one there is nothing to do but ask again.
  if (first_slot >= slab->max_count) {
    r.more = true;
    r.next = first_seg;
    return r;
  }
  if (first_seg == 0) ctr[kCtrPacketsRead] += 1;
  if (src_len <= kVnetHdrLen) {
    r.refuse = kRefuseShort;
    ctr[kCtrRefusedFirst + kRefuseShort] += 1;
    return r;
  }
  VnetHdr h;
  DecodeVnetHdr(src, &h);
  return SplitPacket(h, src + kVnetHdrLen, src_len - kVnetHdrLen, first_seg, slab, first_slot,
                     nullptr, 0, ctr);
}

SplitResult SplitPacket(const VnetHdr& h, const uint8_t* pkt, size_t len, uint32_t first_seg,
                        Slab* slab, size_t first_slot, const uint8_t* prefix, size_t prefix_len,
                        double* ctr) {
  SplitResult r;
  auto refuse = [&](int why) {
    r.produced = 0;
    r.more = false;
    r.next = 0;
    r.refuse = why;
    ctr[kCtrRefusedFirst + why] += 1;
    return r;
  };
  if (first_slot >= slab->max_count) {
    r.more = true;
    r.next = first_seg;
    return r;
  }
  const size_t cap = slab->slot_size - slab->headroom;

  // tun_put_user fills the header with virtio_net_hdr_from_skb: NEEDS_CSUM for
  // CHECKSUM_PARTIAL, DATA_VALID for CHECKSUM_UNNECESSARY, nothing else.
  if (h.flags & ~(kVnetFlagNeedsCsum | kVnetFlagDataValid)) return refuse(kRefuseFlags);
  // The ECN bit only comes with TUN_F_TSO_ECN, which is never granted; UFO (3) neither.
  const uint8_t g = h.gso_type;
  if (g != kGsoNone && g != kGsoTcpV4 && g != kGsoTcpV6 && g != kGsoUdpL4)
    return refuse(kRefuseGsoType);
  // hdr_len is skb_headlen(), a hint about the linear part rather than the exact header size
  // (which is recomputed below from the headers themselves); it can only be checked for
  // lying beyond the packet.
  if (h.hdr_len > len) return refuse(kRefuseHdrLen);

  if (g == kGsoNone) {
    if (first_seg != 0) return refuse(kRefuseState);
    // virtio_net_hdr_from_skb leaves hdr_len and gso_size zero for a non-GSO skb.
    if (h.hdr_len != 0) return refuse(kRefuseHdrLen);
    if (h.gso_size != 0) return refuse(kRefuseGsoSize);
    const size_t slot = first_slot;
    const size_t off = slot * slab->slot_size + slab->headroom;
    uint8_t* dst = slab->buf + off;
    L3 l3{};
    if (h.flags & kVnetFlagNeedsCsum) {
      if (!ParseL3(pkt, len, &l3)) return refuse(kRefuseIpHeader);
      if (l3.proto != kProtoTcp && l3.proto != kProtoUdp) return refuse(kRefuseProtocol);
      if (L4HeaderLen(l3.proto, pkt + l3.l3len, len - l3.l3len) == 0)
        return refuse(kRefuseL4Header);
      if (h.csum_start != l3.l3len || h.csum_offset != CsumOffsetOf(l3.proto))
        return refuse(kRefuseCsumOffset);
    } else if (h.csum_start != 0 || h.csum_offset != 0) {
      return refuse(kRefuseCsumOffset);
    }
    r.produced = 1;
    slab->offs[slot] = static_cast<int32_t>(off);
    // As readPackets: -1 marks a packet too large for its slot, counted as a drop upstream.
    if (prefix_len + len > cap) {
      slab->lens[slot] = -1;
      return r;
    }
    if (prefix_len) memcpy(dst, prefix, prefix_len);
    memcpy(dst + prefix_len, pkt, len);
    slab->lens[slot] = static_cast<int32_t>(prefix_len + len);
    if (h.flags & kVnetFlagNeedsCsum) {
      // skb_checksum_help: the field holds the pseudo-header seed and is summed with the rest.
      uint8_t* l4 = dst + prefix_len + l3.l3len;
      uint16_t c = static_cast<uint16_t>(~Fold(SumBytes(l4, len - l3.l3len, 0)));
      if (c == 0 && l3.proto == kProtoUdp) c = 0xffff;
      Put16(l4 + h.csum_offset, c);
      ctr[kCtrCsumCompleted] += 1;
    }
    return r;
  }

  // GSO: virtio_net_hdr_from_skb always pairs it with NEEDS_CSUM (a GSO skb is
  // CHECKSUM_PARTIAL), and the segments' sums are computed here, as skb_segment's callers do.
  if (!(h.flags & kVnetFlagNeedsCsum)) return refuse(kRefuseFlags);
  L3 l3;
  if (!ParseL3(pkt, len, &l3)) return refuse(kRefuseIpHeader);
  if ((g == kGsoTcpV4 && l3.version != 4) || (g == kGsoTcpV6 && l3.version != 6))
    return refuse(kRefuseIpHeader);
  const uint8_t want_proto = g == kGsoUdpL4 ? kProtoUdp : kProtoTcp;
  if (l3.proto != want_proto) return refuse(kRefuseProtocol);
  if (h.csum_start != l3.l3len || h.csum_offset != CsumOffsetOf(l3.proto))
    return refuse(kRefuseCsumOffset);
  const size_t l4hl = L4HeaderLen(l3.proto, pkt + l3.l3len, len - l3.l3len);
  if (l4hl == 0) return refuse(kRefuseL4Header);
  const size_t hlen = l3.l3len + l4hl;
  const size_t payload = len - hlen;
  const size_t gso = h.gso_size;
  if (gso == 0 || payload == 0) return refuse(kRefuseGsoSize);
  // gso_size >= payload: one segment, as tcp_gso_segment leaves an skb no longer than the MSS.
  const size_t nseg = (payload + gso - 1) / gso;
  const size_t first_len = gso < payload ? gso : payload;
  if (prefix_len + hlen + first_len > cap) return refuse(kRefuseSlotTooSmall);
  if (first_seg >= nseg) return refuse(kRefuseState);

  if (first_seg == 0) ctr[kCtrSuperRead] += 1;
  const uint16_t id0 = l3.version == 4 ? Get16(pkt + 4) : 0;
  const uint32_t seq0 = l3.proto == kProtoTcp ? Get32(pkt + l3.l3len + 4) : 0;
  size_t slot = first_slot;
  for (size_t i = first_seg; i < nseg; i++, slot++) {
    if (slot >= slab->max_count) {
      r.more = true;
      r.next = static_cast<uint32_t>(i);
      break;
    }
    const size_t seg_off = i * gso;
    const size_t seg_len = payload - seg_off < gso ? payload - seg_off : gso;
    const size_t off = slot * slab->slot_size + slab->headroom;
    if (prefix_len) memcpy(slab->buf + off, prefix, prefix_len);
    uint8_t* d = slab->buf + off + prefix_len;
    memcpy(d, pkt, hlen);
    memcpy(d + hlen, pkt + hlen + seg_off, seg_len);
    const size_t l4_len = l4hl + seg_len;
    if (l3.version == 4) {
      Put16(d + 2, static_cast<uint16_t>(hlen + seg_len));
      // inet_gso_segment: consecutive IDs from the super-packet's (no SKB_GSO_TCP_FIXEDID
      // crosses virtio), with the header checksum recomputed for each.
      Put16(d + 4, static_cast<uint16_t>(id0 + i));
      SetIpv4HeaderChecksum(d, l3.l3len);
    } else {
      Put16(d + 4, static_cast<uint16_t>(l4_len));
    }
    uint8_t* l4 = d + l3.l3len;
    if (l3.proto == kProtoTcp) {
      Put32(l4 + 4, static_cast<uint32_t>(seq0 + seg_off));
      // tcp_gso_segment: FIN and PSH stay on the last segment only, CWR on the first only
      // (RFC 3168 section 6.1.2: CWR marks the first packet sent after the window reduction).
      uint8_t flags = l4[13];
      if (i + 1 != nseg) flags &= static_cast<uint8_t>(~(kTcpFin | kTcpPsh));
      if (i != 0) flags &= static_cast<uint8_t>(~kTcpCwr);
      l4[13] = flags;
    } else {
      Put16(l4 + 4, static_cast<uint16_t>(l4_len));
    }
    L3 out = l3;
    out.src = d + (l3.src - pkt);
    out.dst = d + (l3.dst - pkt);
    SetL4Checksum(out, l4, l4_len);
    slab->offs[slot] = static_cast<int32_t>(off);
    slab->lens[slot] = static_cast<int32_t>(prefix_len + hlen + seg_len);
    r.produced++;
  }
  ctr[kCtrSegmentsOut] += static_cast<double>(r.produced);
  return r;
}

bool FixPartialChecksum(uint8_t* pkt, size_t len) {
  L3 l3;
  if (!ParseL3(pkt, len, &l3)) return false;
  if (l3.proto != kProtoTcp && l3.proto != kProtoUdp) return false;
  if (L4HeaderLen(l3.proto, pkt + l3.l3len, len - l3.l3len) == 0) return false;
  return VerifyOrFix(l3, pkt + l3.l3len, len - l3.l3len) == kCsumFixed;
}

namespace {

// One open merge group per flow, as GRO keeps one held skb per flow (tcp4_gro_receive's
// lookup by addresses and ports). A small table: a batch rarely carries more flows than this,
// and an evicted group is merely closed early.
constexpr size_t kFlows = 32;

struct Flow {
  bool used;
  bool open;  // more segments may still be appended
  uint32_t src, dst, ports;
  uint32_t unit;
  uint32_t ack;
  uint32_t next_seq;
  uint16_t first_id;
  uint16_t frag;  // the IPv4 flags/fragment word: DF must match
  uint8_t tos, ttl;
  uint8_t tcp_hl;
  uint16_t gso;
  uint32_t total;  // IPv4 total length of the merged packet so far
  bool psh;
};

}  // namespace

void Coalesce(uint8_t* buf, const int32_t* offs, const int32_t* lens, size_t count, bool merge,
              CoalescePlan* plan, double* ctr) {
  Flow flows[kFlows];
  memset(flows, 0, sizeof flows);
  size_t evict = 0;
  plan->units = 0;
  if (count > plan->cap) count = plan->cap;

  auto new_unit = [&](uint32_t i) {
    size_t u = plan->units++;
    plan->head[u] = i;
    plan->tail[u] = i;
    plan->count[u] = 1;
    plan->payload_off[u] = 0;
    plan->hdr[u] = VnetHdr();
    plan->next[i] = kEnd;
    return static_cast<uint32_t>(u);
  };

  for (size_t i = 0; i < count; i++) {
    if (lens[i] <= 0) continue;
    uint8_t* p = buf + offs[i];
    const size_t len = static_cast<size_t>(lens[i]);
    L3 l3;
    size_t l4hl = 0;
    CsumState cs = kCsumBad;
    bool parsed = ParseL3(p, len, &l3) && (l3.proto == kProtoTcp || l3.proto == kProtoUdp) &&
                  (l4hl = L4HeaderLen(l3.proto, p + l3.l3len, len - l3.l3len)) != 0;
    if (parsed) {
      cs = VerifyOrFix(l3, p + l3.l3len, len - l3.l3len);
      if (cs == kCsumFixed) ctr[kCtrPartialFixed] += 1;
    }
    if (!merge || !parsed || l3.version != 4 || l3.proto != kProtoTcp) {
      new_unit(static_cast<uint32_t>(i));
      continue;
    }
    const uint8_t* th = p + l3.l3len;
    const uint32_t src = Get32(l3.src), dst = Get32(l3.dst), ports = Get32(th);
    Flow* f = nullptr;
    for (size_t k = 0; k < kFlows; k++) {
      if (flows[k].used && flows[k].src == src && flows[k].dst == dst && flows[k].ports == ports) {
        f = &flows[k];
        break;
      }
    }
    const size_t payload = len - l3.l3len - l4hl;
    const uint8_t tflags = th[13];
    // What tcp_gro_receive would hold: no IP options, a valid header and L4 checksum, only
    // ACK (and PSH, which ends the group), no reserved/AE bits, and data to carry.
    const bool candidate = l3.l3len == 20 && cs != kCsumBad && Fold(SumBytes(p, 20, 0)) == 0xffff &&
                           (tflags & ~(kTcpAck | kTcpPsh)) == 0 && (tflags & kTcpAck) &&
                           (th[12] & 0x0f) == 0 && payload > 0;
    if (!candidate) {
      // Anything else of this flow (SYN, FIN, RST, URG, a pure ACK, a bad checksum) goes out in
      // its own place, and later segments must not be merged into a unit written before it.
      if (f) f->open = false;
      new_unit(static_cast<uint32_t>(i));
      continue;
    }
    const uint32_t seq = Get32(th + 4), ack = Get32(th + 8);
    const uint16_t id = Get16(p + 4), frag = Get16(p + 6);
    bool append = false;
    if (f && f->open && f->ack == ack && f->next_seq == seq && f->tos == p[1] &&
        f->ttl == p[8] && f->frag == frag && f->tcp_hl == l4hl && payload <= f->gso &&
        f->total + payload <= 0xffff && plan->count[f->unit] < kMaxMergeSegments) {
      // Without DF the IDs matter to reassembly: require the consecutive ones that
      // re-segmentation (inet_gso_segment) will recreate, as inet_gro_receive does.
      const bool ids_ok =
          (frag & 0x4000) || id == static_cast<uint16_t>(f->first_id + plan->count[f->unit]);
      const uint8_t* head = buf + offs[plan->head[f->unit]];
      append = ids_ok && memcmp(head + 20 + 20, th + 20, l4hl - 20) == 0;
    }
    if (append) {
      const uint32_t u = f->unit;
      plan->next[plan->tail[u]] = static_cast<uint32_t>(i);
      plan->next[i] = kEnd;
      plan->tail[u] = static_cast<uint32_t>(i);
      plan->count[u]++;
      f->next_seq = seq + static_cast<uint32_t>(payload);
      f->total += static_cast<uint32_t>(payload);
      f->psh = (tflags & kTcpPsh) != 0;
      // A short segment or PSH ends the run (tcp_gro_receive flushes on both).
      if (f->psh || payload < f->gso || plan->count[u] >= kMaxMergeSegments) f->open = false;
      continue;
    }
    if (!f) {
      for (size_t k = 0; k < kFlows && !f; k++)
        if (!flows[k].used) f = &flows[k];
      if (!f) {
        f = &flows[evict];
        evict = (evict + 1) % kFlows;
      }
    }
    f->used = true;
    f->src = src;
    f->dst = dst;
    f->ports = ports;
    f->unit = new_unit(static_cast<uint32_t>(i));
    f->ack = ack;
    f->next_seq = seq + static_cast<uint32_t>(payload);
    f->first_id = id;
    f->frag = frag;
    f->tos = p[1];
    f->ttl = p[8];
    f->tcp_hl = static_cast<uint8_t>(l4hl);
    f->gso = static_cast<uint16_t>(payload);
    f->total = static_cast<uint32_t>(len);
    f->psh = (tflags & kTcpPsh) != 0;
    f->open = !f->psh;
  }

  // Patch each merged group's first packet into the super-packet's header, the form
  // virtio_net_hdr_to_skb takes for a CHECKSUM_PARTIAL GSO skb: total length and IP header
  // checksum for the whole, PSH from the last segment, and the TCP field holding the
  // pseudo-header sum for the whole length (what __tcp_v4_send_check leaves for the NIC).
  for (size_t u = 0; u < plan->units; u++) {
    if (plan->count[u] < 2) continue;
    uint8_t* p = buf + offs[plan->head[u]];
    uint8_t* th = p + 20;
    const size_t tcp_hl = static_cast<size_t>(th[12] >> 4) * 4;
    const size_t hlen = 20 + tcp_hl;
    size_t total = static_cast<size_t>(lens[plan->head[u]]);
    for (uint32_t m = plan->next[plan->head[u]]; m != kEnd; m = plan->next[m])
      total += static_cast<size_t>(lens[m]) - hlen;
    const uint8_t* last = buf + offs[plan->tail[u]];
    if (last[20 + 13] & kTcpPsh) th[13] |= kTcpPsh;
    const uint16_t gso = static_cast<uint16_t>(lens[plan->head[u]] - static_cast<int32_t>(hlen));
    Put16(p + 2, static_cast<uint16_t>(total));
    SetIpv4HeaderChecksum(p, 20);
    Put16(th + 16, Fold(PseudoSum(p + 12, p + 16, 4, kProtoTcp,
                                  static_cast<uint32_t>(total - 20))));
    VnetHdr& h = plan->hdr[u];
    h.flags = kVnetFlagNeedsCsum;
    h.gso_type = kGsoTcpV4;
    h.hdr_len = static_cast<uint16_t>(hlen);
    h.gso_size = gso;
    h.csum_start = 20;
    h.csum_offset = 16;
    plan->payload_off[u] = static_cast<uint16_t>(hlen);
  }
}

}  // namespace weft
