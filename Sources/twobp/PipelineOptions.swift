import ArgumentParser
import Foundation
import Pipeline
import Schedules

/// Options shared by every command that runs or describes a pipeline.
struct PipelineOptions: ParsableArguments {
    @Option(parsing: .unconditional, help: "Pipeline stages (ranks). 1 trains on one device.")
    var stages = 1

    @Option(help: "Schedule: naive, gpipe, 1f1b-1, 1f1b-2, interleaved, zb-h1, zb-h2, zb-v.")
    var schedule = "gpipe"

    @Flag(name: .customLong("2bp"), help: "Split backward: send p1 at once, defer p2 (2BP).")
    var twoBP = false

    @Option(name: .customLong("micro-batches"), parsing: .unconditional, help: "Micro-batches per step (default: the schedule's, e.g. S for 1f1b-1, 2S for 1f1b-2).")
    var microBatches: Int?

    @Option(parsing: .unconditional, help: "Model chunks per rank for interleaved schedules (default 2).")
    var chunks: Int?

    @Option(help: "How stages talk: threads (one process) or mpi (one process per stage, under mpirun).")
    var transport: TransportKind = .threads

    @Option(name: .customLong("peer-timeout"),
            help: "With --transport mpi: seconds without a heartbeat from another rank (its host cut off) before the job is aborted naming it; 0 turns the watchdog off. A long step is not silence.")
    var peerTimeout = RankLauncher.defaultPeerTimeout

    mutating func validate() throws {
        guard stages >= 1 else { throw ValidationError("--stages must be at least 1, got \(stages)") }
        if let microBatches, microBatches < 1 { throw ValidationError("--micro-batches must be at least 1, got \(microBatches)") }
        if let chunks, chunks < 1 { throw ValidationError("--chunks must be at least 1, got \(chunks)") }
        guard peerTimeout >= 0, peerTimeout.isFinite else {
            throw ValidationError("--peer-timeout must be a number of seconds (0 turns the watchdog off), got \(peerTimeout)")
        }
    }
}

extension PipelineOptions {
    /// The schedule request these options describe (checked in full when the plan is built).
    func request() throws -> ScheduleRequest {
        ScheduleRequest(kind: try ScheduleKind(name: schedule), ranks: stages, microBatches: microBatches,
                        twoBP: twoBP, chunksPerRank: chunks)
    }
}

extension PipelineOptions {
    /// `--peer-timeout` as `RankLauncher` takes it: nil when 0 turns the watchdog off.
    var peerWatchdogTimeout: Double? { peerTimeout > 0 ? peerTimeout : nil }
}

extension TransportKind: ExpressibleByArgument {}

extension PipelineOptions {
    /// OpenBLAS threads for each rank's process: the cores shared among the stages of this
    /// process (threads), or OPENBLAS_NUM_THREADS / 1 for an MPI rank, unless given.
    func blasThreads(_ requested: Int?) -> Int {
        if let requested { return requested }
        switch transport {
        case .threads: return max(1, ProcessInfo.processInfo.activeProcessorCount / stages)
        case .mpi: return ProcessInfo.processInfo.environment["OPENBLAS_NUM_THREADS"].flatMap(Int.init) ?? 1
        }
    }
}
