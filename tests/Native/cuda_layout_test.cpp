// The CUDA kernels' index math on the CPU (no GPU needed): the implicit GEMM emulated block by block with the very
// functions the kernel uses (igemm.h: loaders, shared-memory swizzle, ldmatrix lane addresses, the mma fragment
// layout of the PTX ISA, the epilogue) and the runner's weight packing (packing.h), against the CPU convolution and
// GEMM on random shapes; plus the tile raster, the tile choice and the activation layouts.
#include "cuda/igemm.h"
#include "cuda/packing.h"
#include "qatml/qatml.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <random>
#include <set>
#include <vector>

using namespace qatml::cuda;

namespace {

unsigned seed() { return std::getenv("QATML_TEST_SEED") ? unsigned(std::strtoul(std::getenv("QATML_TEST_SEED"), nullptr, 10)) : 1234u; }

uint32_t word_at(const uint8_t* p) {
    uint32_t w;
    std::memcpy(&w, p, 4);
    return w;
}

// ldmatrix.x4 of one warp: matrix j's row r address comes from lane 8 j + r; lane t receives 4 bytes (one b16 pair)
// of row t / 4 at byte (t % 4) * 4 from each matrix.
void ldmatrix_x4(const uint8_t* stage, const int (&addr)[32], uint32_t (&regs)[32][4]) {
    for (int t = 0; t < 32; ++t)
        for (int j = 0; j < 4; ++j) regs[t][j] = word_at(stage + addr[8 * j + t / 4] + (t % 4) * 4);
}

// mma.sync.m16n8k32.row.col s32 with 8-bit A (u8 or s8) and s8 B, fragment layouts of the PTX ISA:
// A reg r of lane (g = lane / 4, t = lane % 4): row g + 8 (r & 1), bytes k = 16 (r >> 1) + 4 t .. + 3;
// B reg r: column g, k = 16 r + 4 t .. + 3; C reg i: row g + 8 (i >> 1), column 2 t + (i & 1).
void mma(const uint32_t (&a)[32][4], const uint32_t (&b)[32][2], bool a_signed, int32_t (&c)[32][4]) {
    int32_t A[16][32], B[32][8];
    for (int lane = 0; lane < 32; ++lane) {
        const int g = lane / 4, t = lane % 4;
        for (int r = 0; r < 4; ++r)
            for (int i = 0; i < 4; ++i) {
                const uint8_t byte = static_cast<uint8_t>(a[lane][r] >> (8 * i));
                A[g + 8 * (r & 1)][16 * (r >> 1) + 4 * t + i] = a_signed ? int32_t(int8_t(byte)) : int32_t(byte);
            }
        for (int r = 0; r < 2; ++r)
            for (int i = 0; i < 4; ++i) B[16 * r + 4 * t + i][g] = int8_t(static_cast<uint8_t>(b[lane][r] >> (8 * i)));
    }
    for (int lane = 0; lane < 32; ++lane)
        for (int i = 0; i < 4; ++i) {
            const int row = (lane / 4) + 8 * (i >> 1), col = 2 * (lane % 4) + (i & 1);
            EXPECT_EQ(row, acc_row(lane, i));
            EXPECT_EQ(col, acc_col(lane, i));
            uint32_t s = static_cast<uint32_t>(c[lane][i]);
            for (int k = 0; k < 32; ++k) s += static_cast<uint32_t>(A[row][k] * B[k][col]);
            c[lane][i] = static_cast<int32_t>(s);
        }
}

// igemm_kernel of configuration `config`, one block at a time, on host memory: fills each stage as load_stage does,
// computes each warp's tile through emulated ldmatrix and mma, stores as store_out does.
void emulate_igemm(const IgemmParams& p, int config) {
    const TileConfig t = kTiles[config];
    const int threads = tile_threads(t), warps = threads / 32, warps_m = t.bm / t.wm;
    const int mt_count = t.wm / 16, nt_count = t.wn / 8;
    const int a_chunks = t.bm * 4 / threads, b_chunks = t.bn * 4 / threads;
    const int64_t tiles_m = (p.m + t.bm - 1) / t.bm, tiles_n = (p.n + t.bn - 1) / t.bn;
    const uint32_t pad = (static_cast<uint32_t>(p.a_zero_point) & 0xffu) * 0x01010101u;
    std::vector<uint8_t> sa(static_cast<size_t>(t.bm * kBK)), sb(static_cast<size_t>(t.bn * kBK));
    for (int64_t pid = 0; pid < tiles_m * tiles_n; ++pid) {
        int64_t tm = 0, tn = 0;
        tile_coords(pid, tiles_m, tiles_n, &tm, &tn);
        const int64_t m0 = tm * t.bm;
        const int32_t n0 = static_cast<int32_t>(tn * t.bn);
        // acc[warp][mt][nt][lane][i]
        std::vector<int32_t> acc(static_cast<size_t>(warps * mt_count * nt_count * 32 * 4), 0);
        auto acc_at = [&](int w, int mt, int nt) { return &acc[static_cast<size_t>((((w * mt_count + mt) * nt_count + nt) * 32) * 4)]; };
        for (int kt = 0; kt < p.k_pad / kBK; ++kt) {
            std::fill(sa.begin(), sa.end(), 0xA5);  // anything the loaders fail to write shows up
            std::fill(sb.begin(), sb.end(), 0x5A);
            for (int tid = 0; tid < threads; ++tid) {
                for (int i = 0; i < a_chunks; ++i) {
                    int row = 0, chunk = 0;
                    stage_chunk(tid, i, threads, &row, &chunk);
                    const RowBase rb = row_base(p, m0 + row);
                    const int32_t k0 = kt * kBK + chunk * kChunk;
                    uint8_t* dst = sa.data() + swz(row, chunk);
                    if (p.mode == kConvBytes) {
                        for (int j = 0; j < 16; ++j) {
                            const int64_t src = byte_src(p, rb, k0 + j, p.ktab[k0 + j]);
                            dst[j] = src >= 0 ? p.a[src] : static_cast<uint8_t>(src == kPadSrc ? pad : 0u);
                        }
                    } else {
                        const int64_t src = chunk_src(p, rb, k0);
                        for (int j = 0; j < 16; ++j) dst[j] = src >= 0 ? p.a[src + j] : static_cast<uint8_t>(src == kPadSrc ? pad : 0u);
                    }
                }
                for (int i = 0; i < b_chunks; ++i) {
                    int row = 0, chunk = 0;
                    stage_chunk(tid, i, threads, &row, &chunk);
                    std::memcpy(sb.data() + swz(row, chunk), p.b + int64_t(n0 + row) * p.k_pad + kt * kBK + chunk * kChunk, 16);
                }
            }
            for (int w = 0; w < warps; ++w) {
                const int wm0 = (w % warps_m) * t.wm, wn0 = (w / warps_m) * t.wn;
                for (int ks = 0; ks < kBK / 32; ++ks) {
                    uint32_t af[4][32][4], bf[8][32][2];
                    for (int mt = 0; mt < mt_count; ++mt) {
                        int addr[32];
                        for (int lane = 0; lane < 32; ++lane) addr[lane] = swz(wm0 + ldsm_a_row(lane, mt), ldsm_a_chunk(lane, ks));
                        ldmatrix_x4(sa.data(), addr, af[mt]);
                    }
                    for (int pr = 0; pr < nt_count / 2; ++pr) {
                        int addr[32];
                        uint32_t r[32][4];
                        for (int lane = 0; lane < 32; ++lane) addr[lane] = swz(wn0 + ldsm_b_row(lane, pr), ldsm_b_chunk(lane, ks));
                        ldmatrix_x4(sb.data(), addr, r);
                        for (int lane = 0; lane < 32; ++lane) {
                            bf[2 * pr][lane][0] = r[lane][0];
                            bf[2 * pr][lane][1] = r[lane][1];
                            bf[2 * pr + 1][lane][0] = r[lane][2];
                            bf[2 * pr + 1][lane][1] = r[lane][3];
                        }
                    }
                    for (int mt = 0; mt < mt_count; ++mt)
                        for (int nt = 0; nt < nt_count; ++nt)
                            mma(af[mt], bf[nt], p.a_signed != 0, *reinterpret_cast<int32_t(*)[32][4]>(acc_at(w, mt, nt)));
                }
            }
        }
        for (int w = 0; w < warps; ++w) {
            const int wm0 = (w % warps_m) * t.wm, wn0 = (w / warps_m) * t.wn;
            for (int mt = 0; mt < mt_count; ++mt)
                for (int nt = 0; nt < nt_count; ++nt)
                    for (int lane = 0; lane < 32; ++lane)
                        for (int i = 0; i < 4; ++i) {
                            const int64_t row = m0 + wm0 + mt * 16 + acc_row(lane, i);
                            const int32_t col = n0 + wn0 + nt * 8 + acc_col(lane, i);
                            if (row >= p.m || col >= p.n) continue;
                            const int32_t v = static_cast<int32_t>(static_cast<uint32_t>(acc_at(w, mt, nt)[lane * 4 + i]) +
                                                                   static_cast<uint32_t>(p.coladd[col]));
                            if (p.out_type == QATML_TYPE_INT32) static_cast<int32_t*>(p.c)[row * p.ldc + col] = v;
                            else static_cast<uint8_t*>(p.c)[row * p.ldc + col] = static_cast<uint8_t>(requant(v, p.mult[col], p.out_zp, p.lo, p.hi));
                        }
        }
    }
}

struct ConvCase {
    int64_t n, c, h, w, m, kh, kw, sh, sw, pt, pl, pb, pr, dh, dw;
    int32_t x_type, w_type, out_type;
};

std::string describe(const ConvCase& c) {
    char b[256];
    std::snprintf(b, sizeof b, "N%lld C%lld %lldx%lld M%lld k%lldx%lld s%lld,%lld p%lld,%lld,%lld,%lld d%lld,%lld x%d w%d y%d", (long long)c.n,
                  (long long)c.c, (long long)c.h, (long long)c.w, (long long)c.m, (long long)c.kh, (long long)c.kw, (long long)c.sh,
                  (long long)c.sw, (long long)c.pt, (long long)c.pl, (long long)c.pb, (long long)c.pr, (long long)c.dh, (long long)c.dw,
                  c.x_type, c.w_type, c.out_type);
    return b;
}

// The CPU convolution (NCHW) against the emulated kernel over the same data channels-last, in every tile configuration.
void check_conv(const ConvCase& cc, std::mt19937& rng) {
    SCOPED_TRACE(describe(cc));
    const bool xs = cc.x_type == QATML_TYPE_INT8;
    std::uniform_int_distribution<int> byte(0, 255), w8(-128, 127), w4(-8, 7), bias_d(-3000, 3000);
    std::uniform_real_distribution<float> scale_d(0.0005f, 0.004f);
    std::vector<uint8_t> x(static_cast<size_t>(cc.n * cc.c * cc.h * cc.w));
    for (auto& v : x) v = static_cast<uint8_t>(byte(rng));
    const int32_t xz = xs ? -7 : 131, yz = cc.out_type == QATML_TYPE_INT8 ? 5 : 120;
    const int64_t wcount = cc.m * cc.c * cc.kh * cc.kw;
    std::vector<int8_t> wv(static_cast<size_t>(wcount));
    for (auto& v : wv) v = static_cast<int8_t>(cc.w_type == QATML_TYPE_INT4 ? w4(rng) : w8(rng));
    std::vector<uint8_t> raw(static_cast<size_t>(cc.w_type == QATML_TYPE_INT4 ? (wcount + 1) / 2 : wcount));
    if (cc.w_type == QATML_TYPE_INT4) ASSERT_EQ(qatml_int4_pack(wv.data(), wcount, 1, raw.data()), QATML_OK);
    else std::memcpy(raw.data(), wv.data(), raw.size());
    std::vector<int32_t> bias(static_cast<size_t>(cc.m));
    std::vector<float> mult(static_cast<size_t>(cc.m));
    for (int64_t i = 0; i < cc.m; ++i) bias[static_cast<size_t>(i)] = bias_d(rng), mult[static_cast<size_t>(i)] = scale_d(rng);

    qatml_conv2d_params prm{cc.n, cc.c, cc.h, cc.w, cc.sh, cc.sw, cc.pt, cc.pl, cc.pb, cc.pr, cc.dh, cc.dw};
    int64_t oh = 0, ow = 0;
    ASSERT_EQ(qatml_conv2d_output_size(&prm, cc.kh, cc.kw, &oh, &ow), QATML_OK);
    qatml_packed_weights* pw = nullptr;
    ASSERT_EQ(qatml_conv_pack_weights(nullptr, raw.data(), cc.w_type, cc.m, cc.c, cc.kh, cc.kw, 1, nullptr, &pw), QATML_OK) << qatml_last_error();
    qatml_epilogue ep;
    std::memset(&ep, 0, sizeof ep);
    ep.out_type = cc.out_type;
    ep.bias = bias.data();
    ep.multipliers = mult.data();
    ep.multiplier_count = cc.m;
    ep.out_zero_point = yz;
    const int64_t esz = cc.out_type == QATML_TYPE_INT32 ? 4 : 1;
    std::vector<uint8_t> want(static_cast<size_t>(cc.n * cc.m * oh * ow * esz));
    ASSERT_EQ(qatml_conv2d(nullptr, &prm, x.data(), cc.x_type, xz, pw, &ep, want.data()), QATML_OK) << qatml_last_error();
    qatml_packed_weights_destroy(pw);

    // Channels-last input, packed B and epilogue constants as the runner prepares them.
    std::vector<uint8_t> xl(x.size());
    for (int64_t i = 0; i < cc.n; ++i)
        for (int64_t ch = 0; ch < cc.c; ++ch)
            for (int64_t p = 0; p < cc.h * cc.w; ++p)
                xl[static_cast<size_t>((i * cc.h * cc.w + p) * cc.c + ch)] = x[static_cast<size_t>((i * cc.c + ch) * cc.h * cc.w + p)];
    IgemmParams p{};
    p.g = ConvGeom{int32_t(cc.h), int32_t(cc.w), int32_t(cc.c), int32_t(oh), int32_t(ow), int32_t(cc.kh), int32_t(cc.kw), int32_t(cc.sh),
                   int32_t(cc.sw), int32_t(cc.pt), int32_t(cc.pl), int32_t(cc.dh), int32_t(cc.dw), int32_t(cc.c)};
    p.k = static_cast<int32_t>(cc.kh * cc.kw * cc.c);
    p.k_pad = round_up32(p.k, kBK);
    p.n = static_cast<int32_t>(cc.m);
    const int64_t n_pad = (cc.m + kNPad - 1) / kNPad * kNPad;
    const std::vector<int8_t> b = conv_weights_igemm(raw.data(), cc.w_type, cc.m, cc.c, cc.kh, cc.kw, p.k_pad);
    const std::vector<int32_t> coladd = column_offsets(b.data(), cc.m, n_pad, p.k_pad, bias.data(), xz);
    const std::vector<float> mults = expand_multipliers(mult, cc.m, n_pad);
    const std::vector<KTap> ktab = k_table(p.g, p.k_pad);
    p.a = xl.data();
    p.b = b.data();
    p.coladd = coladd.data();
    p.mult = mults.data();
    p.ktab = ktab.data();
    p.mode = conv_mode(p.g);
    p.m = cc.n * oh * ow;
    p.ldc = cc.m;
    p.a_signed = xs;
    p.a_zero_point = xz;
    p.out_type = cc.out_type;
    p.out_zp = yz;
    p.lo = cc.out_type == QATML_TYPE_INT8 ? -128 : 0;
    p.hi = cc.out_type == QATML_TYPE_INT8 ? 127 : 255;
    for (int config = 0; config < kTileConfigs; ++config) {
        SCOPED_TRACE("tile config " + std::to_string(config) + ", loader " + std::to_string(p.mode));
        std::vector<uint8_t> got(want.size(), 0xEE);
        p.c = got.data();
        emulate_igemm(p, config);
        size_t bad = 0;
        for (int64_t i = 0; i < cc.n; ++i)
            for (int64_t o = 0; o < cc.m; ++o)
                for (int64_t q = 0; q < oh * ow; ++q) {
                    const size_t w_at = static_cast<size_t>(((i * cc.m + o) * oh * ow + q) * esz);
                    const size_t g_at = static_cast<size_t>(((i * oh * ow + q) * cc.m + o) * esz);
                    if (std::memcmp(&want[w_at], &got[g_at], static_cast<size_t>(esz)) != 0 && bad++ < 3)
                        ADD_FAILURE() << "image " << i << " channel " << o << " pixel " << q;
                }
        EXPECT_EQ(bad, 0u);
    }
}

TEST(CudaIgemmEmulation, ConvolutionsMatchTheCpuKernel) {
    std::mt19937 rng(seed());
    const ConvCase cases[] = {
        // channel chunks of 16 (kConvVec): 3x3 pad 1, stride 2, dilation 2, 1x1 stride 2, s8 input, int4 weights
        {2, 32, 9, 7, 40, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, QATML_TYPE_UINT8, QATML_TYPE_INT8, QATML_TYPE_UINT8},
        {1, 16, 11, 10, 72, 3, 3, 2, 2, 1, 1, 1, 0, 1, 1, QATML_TYPE_INT8, QATML_TYPE_INT8, QATML_TYPE_INT8},
        {2, 48, 8, 8, 24, 3, 3, 1, 1, 2, 2, 2, 2, 2, 2, QATML_TYPE_UINT8, QATML_TYPE_INT4, QATML_TYPE_INT8},
        {3, 64, 6, 6, 130, 1, 1, 2, 2, 0, 0, 0, 0, 1, 1, QATML_TYPE_INT8, QATML_TYPE_INT8, QATML_TYPE_UINT8},
        // byte gathers (kConvBytes): ResNet-like stem 7x7 stride 2 over 3 channels, one channel, odd counts
        {2, 3, 15, 13, 20, 7, 7, 2, 2, 3, 3, 3, 3, 1, 1, QATML_TYPE_UINT8, QATML_TYPE_INT8, QATML_TYPE_UINT8},
        {1, 1, 12, 12, 9, 5, 5, 1, 1, 0, 0, 0, 0, 1, 1, QATML_TYPE_UINT8, QATML_TYPE_INT4, QATML_TYPE_UINT8},
        {2, 5, 7, 9, 33, 3, 2, 1, 2, 1, 0, 2, 1, 1, 2, QATML_TYPE_INT8, QATML_TYPE_INT8, QATML_TYPE_INT32},
    };
    for (const ConvCase& c : cases) check_conv(c, rng);
}

// The CPU GEMM over logical rows against the emulated kernel over the runner's storage order (channels-last when
// the input is an 8-bit [C, H, W] tensor, weights permuted to match).
void check_gemm(int64_t m, int64_t c, int64_t h, int64_t w, int64_t n, bool trans_b, int32_t a_type, int32_t w_type, int32_t out_type,
                std::mt19937& rng) {
    const int64_t k = c * h * w;
    SCOPED_TRACE("M" + std::to_string(m) + " K" + std::to_string(k) + " (" + std::to_string(c) + "x" + std::to_string(h) + "x" +
                 std::to_string(w) + ") N" + std::to_string(n) + (trans_b ? " transB" : "") + " a" + std::to_string(a_type) + " w" +
                 std::to_string(w_type) + " y" + std::to_string(out_type));
    std::uniform_int_distribution<int> byte(0, 255), w8(-128, 127), w4(-8, 7), bias_d(-3000, 3000);
    std::uniform_real_distribution<float> scale_d(0.0005f, 0.004f);
    std::vector<uint8_t> a(static_cast<size_t>(m * k));
    for (auto& v : a) v = static_cast<uint8_t>(byte(rng));
    std::vector<int8_t> wv(static_cast<size_t>(k * n));
    for (auto& v : wv) v = static_cast<int8_t>(w_type == QATML_TYPE_INT4 ? w4(rng) : w8(rng));
    std::vector<uint8_t> raw(static_cast<size_t>(w_type == QATML_TYPE_INT4 ? (k * n + 1) / 2 : k * n));
    if (w_type == QATML_TYPE_INT4) ASSERT_EQ(qatml_int4_pack(wv.data(), k * n, 1, raw.data()), QATML_OK);
    else std::memcpy(raw.data(), wv.data(), raw.size());
    std::vector<int32_t> bias(static_cast<size_t>(n));
    std::vector<float> mult(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) bias[static_cast<size_t>(i)] = bias_d(rng), mult[static_cast<size_t>(i)] = scale_d(rng);
    const int32_t az = a_type == QATML_TYPE_INT8 ? 3 : 97, yz = out_type == QATML_TYPE_INT8 ? -4 : 128;

    qatml_packed_weights* pw = nullptr;
    ASSERT_EQ(qatml_gemm_pack_b(nullptr, raw.data(), w_type, k, n, trans_b, nullptr, &pw), QATML_OK) << qatml_last_error();
    qatml_epilogue ep;
    std::memset(&ep, 0, sizeof ep);
    ep.out_type = out_type;
    ep.bias = bias.data();
    ep.multipliers = mult.data();
    ep.multiplier_count = n;
    ep.out_zero_point = yz;
    const int64_t esz = out_type == QATML_TYPE_INT32 ? 4 : 1;
    std::vector<uint8_t> want(static_cast<size_t>(m * n * esz));
    ASSERT_EQ(qatml_gemm(nullptr, m, a.data(), a_type, k, az, pw, &ep, want.data(), n), QATML_OK) << qatml_last_error();
    qatml_packed_weights_destroy(pw);

    const int64_t dims[3] = {c, h, w};
    const Layout lx = tensor_layout(a_type, 3, dims);
    std::vector<uint8_t> stored(a.size());
    for (int64_t r = 0; r < m; ++r)
        for (int64_t e = 0; e < k; ++e) stored[static_cast<size_t>(r * k + storage_index(lx, e))] = a[static_cast<size_t>(r * k + e)];
    IgemmParams p{};
    p.k = static_cast<int32_t>(k);
    p.k_pad = round_up32(p.k, kBK);
    p.n = static_cast<int32_t>(n);
    const int64_t n_pad = (n + kNPad - 1) / kNPad * kNPad;
    const std::vector<int8_t> b = gemm_weights_igemm(raw.data(), w_type, k, n, trans_b, lx, p.k_pad);
    const std::vector<int32_t> coladd = column_offsets(b.data(), n, n_pad, p.k_pad, bias.data(), az);
    const std::vector<float> mults = expand_multipliers(mult, n, n_pad);
    p.g = gemm_geometry(p.k);
    const std::vector<KTap> ktab = k_table(p.g, p.k_pad);
    p.a = stored.data();
    p.lda = k;
    p.b = b.data();
    p.coladd = coladd.data();
    p.mult = mults.data();
    p.ktab = ktab.data();
    p.mode = gemm_mode(k);
    p.m = m;
    p.ldc = n;
    p.a_signed = a_type == QATML_TYPE_INT8;
    p.a_zero_point = az;
    p.out_type = out_type;
    p.out_zp = yz;
    p.lo = out_type == QATML_TYPE_INT8 ? -128 : 0;
    p.hi = out_type == QATML_TYPE_INT8 ? 127 : 255;
    for (int config = 0; config < kTileConfigs; ++config) {
        SCOPED_TRACE("tile config " + std::to_string(config) + ", loader " + std::to_string(p.mode));
        std::vector<uint8_t> got(want.size(), 0xEE);
        p.c = got.data();
        emulate_igemm(p, config);
        EXPECT_EQ(got, want);
    }
}

TEST(CudaIgemmEmulation, GemmsMatchTheCpuKernel) {
    std::mt19937 rng(seed() + 1);
    check_gemm(70, 64, 1, 1, 33, false, QATML_TYPE_UINT8, QATML_TYPE_INT8, QATML_TYPE_UINT8, rng);   // dense rows
    check_gemm(130, 48, 1, 1, 300, true, QATML_TYPE_INT8, QATML_TYPE_INT4, QATML_TYPE_INT8, rng);    // dense, > 256 columns
    check_gemm(9, 37, 1, 1, 10, true, QATML_TYPE_UINT8, QATML_TYPE_INT8, QATML_TYPE_INT32, rng);     // K % 16 != 0: bytes
    check_gemm(17, 8, 3, 3, 20, false, QATML_TYPE_UINT8, QATML_TYPE_INT8, QATML_TYPE_UINT8, rng);    // channels-last input
    check_gemm(5, 16, 2, 2, 12, true, QATML_TYPE_INT8, QATML_TYPE_INT8, QATML_TYPE_INT8, rng);       // channels-last, dense
}

TEST(CudaIgemmLayout, TileRasterIsABijection) {
    for (int64_t tm_count : {1, 3, 8, 9, 17, 64})
        for (int64_t tn_count : {1, 2, 5, 32}) {
            std::set<std::pair<int64_t, int64_t>> seen;
            for (int64_t pid = 0; pid < tm_count * tn_count; ++pid) {
                int64_t tm = -1, tn = -1;
                tile_coords(pid, tm_count, tn_count, &tm, &tn);
                ASSERT_TRUE(tm >= 0 && tm < tm_count && tn >= 0 && tn < tn_count) << pid;
                seen.insert({tm, tn});
            }
            EXPECT_EQ(static_cast<int64_t>(seen.size()), tm_count * tn_count) << tm_count << "x" << tn_count;
        }
}

TEST(CudaIgemmLayout, SwizzleIsConflictFreeForLdmatrixAndFillsEachRow) {
    // The 8 row addresses of one ldmatrix phase cover all 32 banks (4 banks per 16 bytes).
    for (int row0 = 0; row0 < 256; row0 += 8)
        for (int chunk = 0; chunk < 4; ++chunk) {
            std::set<int> banks;
            for (int r = 0; r < 8; ++r)
                for (int b = 0; b < 4; ++b) banks.insert((swz(row0 + r, chunk) / 4 + b) % 32);
            EXPECT_EQ(banks.size(), 32u) << row0 << " " << chunk;
        }
    // Each row's four chunks stay within the row, at distinct offsets.
    for (int row = 0; row < 64; ++row) {
        std::set<int> at;
        for (int chunk = 0; chunk < 4; ++chunk) {
            const int o = swz(row, chunk);
            EXPECT_GE(o, row * kBK);
            EXPECT_LT(o, (row + 1) * kBK);
            at.insert(o);
        }
        EXPECT_EQ(at.size(), 4u);
    }
}

TEST(CudaIgemmLayout, TileChoiceFillsTheGpu) {
    const int occupancy[kTileConfigs] = {1, 2, 2, 2, 4};  // what an H100-class GPU reports for these kernels
    EXPECT_EQ(choose_tile(8192, 8192, 132, occupancy), 0);  // big square: the largest tile
    const int skinny = choose_tile(256, 8192, 132, occupancy);
    EXPECT_GE(int64_t(((256 + kTiles[skinny].bm - 1) / kTiles[skinny].bm) * ((8192 + kTiles[skinny].bn - 1) / kTiles[skinny].bn)), 128)
        << "M = 256 must still occupy the multiprocessors, config " << skinny;
    const int narrow = choose_tile(256 * 56 * 56, 64, 132, occupancy);  // 64 output channels: no 256-wide tiles
    EXPECT_EQ(kTiles[narrow].bn, 64);
    for (int c = 0; c < kTileConfigs; ++c) {
        EXPECT_EQ(kTiles[c].bm % kTiles[c].wm, 0);
        EXPECT_EQ(kTiles[c].bn % kTiles[c].wn, 0);
        EXPECT_EQ(kNPad % kTiles[c].bn, 0) << "B rows are padded for every tile width";
        EXPECT_EQ(kTiles[c].bm * 4 % tile_threads(kTiles[c]), 0);
        EXPECT_LE(tile_smem_bytes(kTiles[c]), 160 * 1024) << "fits an A100's shared memory";
    }
}

TEST(CudaLayout, ChannelsLastStorageIsAPermutationOfEachRow) {
    const int64_t dims[3] = {5, 3, 4};
    const Layout l = tensor_layout(QATML_TYPE_UINT8, 3, dims);
    ASSERT_TRUE(l.channels_last);
    std::set<int64_t> seen;
    for (int64_t e = 0; e < 60; ++e) seen.insert(storage_index(l, e));
    EXPECT_EQ(seen.size(), 60u);
    EXPECT_EQ(*seen.rbegin(), 59);
    EXPECT_EQ(storage_index(l, 1 * 12 + 2 * 4 + 3), (2 * 4 + 3) * 5 + 1);  // channel 1, pixel (2, 3)
    const int64_t column[3] = {5, 1, 1}, plane[3] = {1, 3, 4}, vec[1] = {60};
    EXPECT_FALSE(tensor_layout(QATML_TYPE_UINT8, 3, column).channels_last);
    EXPECT_FALSE(tensor_layout(QATML_TYPE_INT8, 3, plane).channels_last);
    EXPECT_FALSE(tensor_layout(QATML_TYPE_UINT8, 1, vec).channels_last);
    EXPECT_FALSE(tensor_layout(QATML_TYPE_FLOAT32, 3, dims).channels_last);
}

}  // namespace
