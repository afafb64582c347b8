import CBLAS

/// Matrix products through OpenBLAS 0.3.34 (PyPI's scipy-openblas32, symbols prefixed `scipy_`),
/// row-major, with transpose flags instead of copies. OpenBLAS runs one thread per call; a large
/// product is split over `Parallel.threads` (see `Parallel`).
public enum BLAS {
    /// OpenBLAS threads per process (the wheel does not export the per-thread
    /// `openblas_set_num_threads_local` its header declares); `Parallel.setThreads` keeps it at 1.
    static func setLibraryThreads(_ count: Int) {
        scipy_openblas_set_num_threads(Int32(count))
    }

    /// OpenBLAS starts with a thread per core; the first product sets it to one per call.
    private static let libraryIsSingleThreaded: Void = setLibraryThreads(1)

    /// Products below this many FLOPs run as one call: splitting costs a few tens of microseconds.
    static let minimumParallelFLOPs = 1 << 23

    /// The kernel OpenBLAS picked for this CPU (honours OPENBLAS_CORETYPE), for benchmark reports.
    public static var coreName: String {
        guard let name = scipy_openblas_get_corename() else { return "unknown" }
        return String(cString: name)
    }

    /// `C = alpha * op(A) * op(B) + beta * C` on row-major matrices, C being m x n and op(A) m x k.
    @inline(__always)
    public static func gemm(
        transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int,
        alpha: Float = 1, a: UnsafePointer<Float>, lda: Int,
        b: UnsafePointer<Float>, ldb: Int,
        beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        guard m > 0, n > 0 else { return }
        _ = libraryIsSingleThreaded
        func call(m: Int, n: Int, a: UnsafePointer<Float>, b: UnsafePointer<Float>, c: UnsafeMutablePointer<Float>) {
            scipy_cblas_sgemm(
                CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans, transposeB ? CblasTrans : CblasNoTrans,
                Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
        }
        GEMMProfile.measure(flops: 2 * Double(m) * Double(n) * Double(k)) {
            guard Parallel.threads > 1, !Parallel.isInsidePart, 2 * m * n * k >= minimumParallelFLOPs else {
                return call(m: m, n: n, a: a, b: b, c: c)
            }
            // Blocks of C's rows (rows of op(A)) or columns (columns of op(B)), whichever is longer.
            if m >= n {
                Parallel.forEachPart(of: m, minimumPerPart: 16) { rows in
                    call(m: rows.count, n: n, a: a + rows.lowerBound * (transposeA ? 1 : lda), b: b,
                         c: c + rows.lowerBound * ldc)
                }
            } else {
                Parallel.forEachPart(of: n, minimumPerPart: 16) { columns in
                    call(m: m, n: columns.count, a: a, b: b + columns.lowerBound * (transposeB ? ldb : 1),
                         c: c + columns.lowerBound)
                }
            }
        }
    }

    /// 2-D product of tensors viewed as [rowCount, columnCount]:
    /// `c (+)= op(a) * op(b)`, accumulating when `accumulate` is set.
    public static func matmul(
        _ c: Tensor, _ a: Tensor, transposeA: Bool = false, _ b: Tensor, transposeB: Bool = false,
        accumulate: Bool = false
    ) {
        let (m, k) = transposeA ? (a.columnCount, a.rowCount) : (a.rowCount, a.columnCount)
        let (kb, n) = transposeB ? (b.columnCount, b.rowCount) : (b.rowCount, b.columnCount)
        precondition(k == kb && c.rowCount == m && c.columnCount == n,
                     "matmul: \(a.shape)\(transposeA ? "ᵀ" : "") x \(b.shape)\(transposeB ? "ᵀ" : "") into \(c.shape)")
        gemm(transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k,
             a: a.pointer, lda: a.columnCount, b: b.pointer, ldb: b.columnCount,
             beta: accumulate ? 1 : 0, c: c.pointer, ldc: n)
    }
}
