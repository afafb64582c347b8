import Foundation
import Tensor

/// How pipeline ranks reach each other.
public enum TransportKind: String, CaseIterable, Sendable {
    /// One process, one thread per rank; tensors pass by reference.
    case threads
    /// One process per rank, launched by `mpirun`; tensors travel through Open MPI.
    case mpi
}

/// Starts the ranks of a pipeline and runs the same body on each (SPMD).
public enum RankLauncher {
    /// Runs `body` on every rank and returns rank 0's result; nil in the other MPI processes.
    ///
    /// With `.threads`, `ranks` threads of this process. With `.mpi`, this process is one
    /// rank of an `mpirun` job whose size must equal `ranks`; an error on any rank aborts
    /// the whole job with that rank named, so no rank waits forever. MPI stays initialised
    /// for further runs; `finishMPI()` ends it before the process exits. Under MPI a rank
    /// unheard for `peerTimeout` seconds (its host cut off) aborts the job naming it
    /// (`MPIPeerWatchdog`; nil turns that off).
    public static func run<T>(_ kind: TransportKind, ranks: Int, receiveTimeout: Double = 300,
                              peerTimeout: Double? = defaultPeerTimeout,
                              _ body: @escaping (Transport) throws -> T?) throws -> T? {
        switch kind {
        case .threads:
            // Under `mpirun -np N` without --transport mpi, every process would run the whole
            // pipeline on its own and they would all write the same files.
            if let size = MPIEnvironment.launchedWorldSize, size > 1 {
                throw TwoBPError("this process is one of \(size) started by mpirun, but --transport is threads: "
                    + "add --transport mpi (one rank per stage), or run without mpirun")
            }
            return try RankThreads.run(transports: ThreadTransport.group(ranks: ranks, receiveTimeout: receiveTimeout), body)[0]
        case .mpi:
            guard MPIEnvironment.isLaunchedByMPI else {
                throw TwoBPError("--transport mpi needs the job launched by mpirun, e.g. scripts/mpi-run.sh -np \(ranks) twobp ...")
            }
            let environment = try MPIEnvironment.initialize()
            guard environment.worldSize == ranks else {
                throw TwoBPError("mpirun started \(environment.worldSize) ranks but --stages is \(ranks); use mpirun -np \(ranks)")
            }
            let transport = try MPITransport(environment: environment, options: .init(timeout: receiveTimeout, peerTimeout: peerTimeout))
            let result: T?
            do {
                result = try body(transport)
                try transport.waitForSends()
            } catch {
                environment.abort("\(error)")
            }
            try transport.close()
            return result
        }
    }

    /// Seconds of silence from a peer rank before an MPI job is aborted: far above a heartbeat
    /// interval's jitter, well within the minute a user waits before suspecting a hang.
    public static let defaultPeerTimeout = 30.0

    /// Finalises MPI if this process initialised it (every rank must call it, once, at the end).
    public static func finishMPI() throws {
        guard let environment = MPIEnvironment.current, !environment.isFinalized else { return }
        try environment.finalize()
    }
}
