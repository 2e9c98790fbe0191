// The CUDA kernels' index math on the CPU (no GPU needed): the implicit GEMM emulated block by block with the very
// functions the kernel uses (igemm.h: loaders, shared-memory swizzle, ldmatrix lane addresses, the mma fragment
// layout of the PTX ISA, the epilogue) and the runner's weight packing (packing.h), against the CPU convolution and
// GEMM on random shapes; plus the tile raster, the tile choice and the activation layouts.
#include "igemm_cases.h"

#include <cstdlib>
#include <cstring>
#include <random>
#include <set>
#include <vector>

using namespace qatml::cuda;
using namespace qatml_test;

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
                            else if (p.out_type == QATML_TYPE_FLOAT32) static_cast<float*>(p.c)[row * p.ldc + col] = scaled_float(v, p.mult[col]);
                            else static_cast<uint8_t*>(p.c)[row * p.ldc + col] = static_cast<uint8_t>(requant(v, p.mult[col], p.out_zp, p.lo, p.hi));
                        }
        }
    }
}

// Every tile configuration on every case.
void check_emulation(const IgemmCase& t) {
    SCOPED_TRACE(t.name);
    for (int config = 0; config < kTileConfigs; ++config) {
        SCOPED_TRACE("tile config " + std::to_string(config) + ", loader " + std::to_string(t.p.mode));
        std::vector<uint8_t> got(t.want.size(), 0xEE);
        IgemmParams p = t.p;
        p.c = got.data();
        emulate_igemm(p, config);
        EXPECT_EQ(got, t.want);
    }
}

TEST(CudaIgemmEmulation, ConvolutionsMatchTheCpuKernel) {
    std::mt19937 rng(seed());
    for (const ConvCase& c : small_conv_cases()) {
        IgemmCase t;
        make_case(c, rng, &t);
        check_emulation(t);
    }
}

// The CPU GEMM over logical rows against the emulated kernel over the runner's storage order.
TEST(CudaIgemmEmulation, GemmsMatchTheCpuKernel) {
    std::mt19937 rng(seed() + 1);
    for (const GemmCase& c : small_gemm_cases()) {
        IgemmCase t;
        make_case(c, rng, &t);
        check_emulation(t);
    }
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
