import CMPIShim
import Foundation
import Pipeline
import Tensor

// The transport-independent half (configuration, result, ping-pong through any
// `Transport`) comes first; it could move to a TransportBenchmark.swift of its
// own once a second transport uses it. The MPI reference and the driver follow.

/// What a transport benchmark measures: ping-pong round trips of activation-sized messages.
public struct TransportBenchmarkConfiguration: Codable, Sendable, Equatable {
    /// Message sizes in bytes (multiples of 4: the messages are Float32 tensors).
    public var sizes: [Int]
    /// Timed rounds per size, alternating reference and transport; every round trip of every round is timed.
    public var repetitions: Int
    /// Untimed round trips before each timed round.
    public var warmupIterations: Int
    /// A timed round moves about this many bytes each way, in `minIterations...maxIterations` round trips.
    public var bytesPerRepetition: Int
    public var minIterations: Int
    public var maxIterations: Int

    /// 4 KiB to 16 MiB in steps of 4x: from a small activation to a 7B layer's micro-batch.
    public static let defaultSizes = [4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20]

    public init(sizes: [Int] = defaultSizes, repetitions: Int = 5, warmupIterations: Int = 2,
                bytesPerRepetition: Int = 64 << 20, minIterations: Int = 4, maxIterations: Int = 200) {
        self.sizes = sizes
        self.repetitions = repetitions
        self.warmupIterations = warmupIterations
        self.bytesPerRepetition = bytesPerRepetition
        self.minIterations = minIterations
        self.maxIterations = maxIterations
    }

    public func iterations(forBytes bytes: Int) -> Int {
        min(maxIterations, max(minIterations, bytesPerRepetition / max(bytes, 1)))
    }

    public func validate() throws {
        guard !sizes.isEmpty, sizes.allSatisfy({ $0 > 0 && $0 % 4 == 0 }) else {
            throw TwoBPError("benchmark sizes must be positive multiples of 4 bytes, got \(sizes)")
        }
        guard repetitions > 0, warmupIterations >= 0, minIterations > 0, maxIterations >= minIterations else {
            throw TwoBPError("benchmark needs repetitions > 0, warm-up >= 0 and 0 < min iterations <= max iterations")
        }
    }
}

/// Latency and bandwidth through a transport next to a reference measured in the same run.
public struct TransportBenchmarkResult: Codable, Sendable, Equatable {
    /// One direction of a ping-pong, from every timed round trip: the median is robust
    /// to the pre-emptions of a shared machine, the minimum shows the best case.
    public struct Measurement: Codable, Sendable, Equatable {
        /// Half the median round trip.
        public var latencySeconds: Double
        /// Half the fastest round trip.
        public var minLatencySeconds: Double
        /// Message bytes over `latencySeconds`.
        public var bandwidthBytesPerSecond: Double
        public var roundTrips: Int

        public init(bytes: Int, roundTripSeconds: [Double]) {
            let sorted = roundTripSeconds.sorted()
            let middle = sorted.count / 2
            let median = sorted.isEmpty ? 0 : sorted.count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
            latencySeconds = median / 2
            minLatencySeconds = (sorted.first ?? 0) / 2
            bandwidthBytesPerSecond = latencySeconds > 0 ? Double(bytes) / latencySeconds : 0
            roundTrips = sorted.count
        }
    }

    public struct Point: Codable, Sendable, Equatable {
        public var bytes: Int
        /// Round trips per timed round.
        public var iterations: Int
        public var reference: Measurement
        public var transport: Measurement
        /// Transport over reference median latency: 1 means no overhead, 1.1 means 10% slower.
        public var timeRatio: Double
    }

    /// The transport measured, e.g. "MPITransport".
    public var transport: String
    /// What it is compared with, e.g. "MPI_Send/MPI_Recv".
    public var reference: String
    /// The two ranks that exchanged messages (the first timed), and the job size.
    public var ranks: [Int]
    public var worldSize: Int
    /// Where each of the two ranks ran (`MPI_Get_processor_name`).
    public var hosts: [String]
    public var configuration: TransportBenchmarkConfiguration
    public var points: [Point]

    /// One line per size, for people.
    public var table: String {
        var lines = ["\(transport) vs \(reference), ranks \(ranks.map(String.init).joined(separator: "<->")) "
                     + "(one way: half the median round trip)",
                     "     bytes   ref latency   ref GB/s   transport latency   transport GB/s   ratio"]
        for point in points {
            lines.append(String(format: "%10d  %10.1f us  %9.3f  %15.1f us  %15.3f  %6.3f",
                                point.bytes, point.reference.latencySeconds * 1e6,
                                point.reference.bandwidthBytesPerSecond / 1e9,
                                point.transport.latencySeconds * 1e6,
                                point.transport.bandwidthBytesPerSecond / 1e9, point.timeRatio))
        }
        return lines.joined(separator: "\n")
    }
}

public enum TransportBenchmark {
    /// Tags of the benchmark's messages: the "ping" is an activation for stage 1, the "pong" a gradient for stage 0.
    static let pingTag = MessageTag(kind: .activation, microBatch: 0, stage: 1)
    static let pongTag = MessageTag(kind: .gradient, microBatch: 0, stage: 0)

    /// Runs `iterations` round trips of a `floats`-element tensor through `transport`
    /// between this rank and `peer`, as a stage runner would use it: each receive is
    /// announced with `expect` before the matching send goes out, and the responder
    /// sends back the very tensor it received. Returns each round trip's seconds on
    /// the initiator, nothing on the responder.
    public static func pingPong(through transport: Transport, peer: Int, initiator: Bool,
                                floats: Int, iterations: Int) throws -> [Double] {
        let shape = [floats]
        if initiator {
            let message = Tensor(zeros: shape)
            for index in 0..<floats { message[index] = Float(index % 251) }
            return try timedRoundTrips(iterations) {
                transport.expect(from: peer, tag: pongTag, shape: shape)
                try transport.send(message, to: peer, tag: pingTag)
                _ = try transport.receive(from: peer, tag: pongTag, shape: shape)
            }
        }
        transport.expect(from: peer, tag: pingTag, shape: shape)
        for iteration in 0..<iterations {
            let message = try transport.receive(from: peer, tag: pingTag, shape: shape)
            if iteration + 1 < iterations { transport.expect(from: peer, tag: pingTag, shape: shape) }
            try transport.send(message, to: peer, tag: pongTag)
        }
        return []
    }

    /// Seconds each of `count` calls of `roundTrip` took.
    static func timedRoundTrips(_ count: Int, _ roundTrip: () throws -> Void) rethrows -> [Double] {
        var seconds: [Double] = []
        seconds.reserveCapacity(count)
        for _ in 0..<count {
            let start = DispatchTime.now().uptimeNanoseconds
            try roundTrip()
            seconds.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
        }
        return seconds
    }
}

// MARK: - MPI

/// The MPI transport benchmark behind `twobp bench transport`: `MPITransport`
/// against a plain blocking `MPI_Send`/`MPI_Recv` ping-pong, both between ranks
/// 0 and 1 of the same job, interleaved round by round so both see the same
/// machine load.
public enum MPITransportBenchmark {
    /// Collective: every rank of the job calls it (ranks above 1 only wait).
    /// Returns the result on rank 0 and nil on the others.
    public static func run(transport: MPITransport,
                           configuration: TransportBenchmarkConfiguration = .init()) throws -> TransportBenchmarkResult? {
        try configuration.validate()
        guard transport.worldSize >= 2 else {
            throw TwoBPError("the transport benchmark needs at least 2 ranks, the job has \(transport.worldSize)")
        }
        let rank = transport.rank
        let names = try transport.gather(Array(transport.environment.processorName.utf8), root: 0)
        var points: [TransportBenchmarkResult.Point] = []
        if rank < 2 {
            let peer = 1 - rank
            let initiator = rank == 0
            let raw = RawPingPong(maxBytes: configuration.sizes.max()!)
            for bytes in configuration.sizes {
                let floats = bytes / MemoryLayout<Float>.stride
                let iterations = configuration.iterations(forBytes: bytes)
                var rawTimes: [Double] = []
                var transportTimes: [Double] = []
                for repetition in 0..<configuration.repetitions {
                    // Alternate which goes first so neither always runs on a warmer machine.
                    for rawFirst in repetition % 2 == 0 ? [true, false] : [false, true] {
                        if rawFirst {
                            try raw.run(rank: rank, peer: peer, bytes: bytes, iterations: configuration.warmupIterations)
                            rawTimes += try raw.run(rank: rank, peer: peer, bytes: bytes, iterations: iterations)
                        } else {
                            _ = try TransportBenchmark.pingPong(through: transport, peer: peer, initiator: initiator,
                                                                floats: floats, iterations: configuration.warmupIterations)
                            transportTimes += try TransportBenchmark.pingPong(
                                through: transport, peer: peer, initiator: initiator, floats: floats, iterations: iterations)
                        }
                    }
                }
                guard initiator else { continue }
                let reference = TransportBenchmarkResult.Measurement(bytes: bytes, roundTripSeconds: rawTimes)
                let measured = TransportBenchmarkResult.Measurement(bytes: bytes, roundTripSeconds: transportTimes)
                points.append(.init(bytes: bytes, iterations: iterations, reference: reference, transport: measured,
                                    timeRatio: measured.latencySeconds / reference.latencySeconds))
            }
        }
        // Everyone leaves together (and the responder's last sends complete before anyone closes).
        try transport.waitForSends()
        try transport.barrier()
        guard rank == 0, let names else { return nil }
        return TransportBenchmarkResult(
            transport: "MPITransport", reference: "MPI_Send/MPI_Recv", ranks: [0, 1], worldSize: transport.worldSize,
            hosts: names.prefix(2).map { String(decoding: $0, as: UTF8.self) },
            configuration: configuration, points: points)
    }

    /// Blocking ping-pong on `MPI_COMM_WORLD` (the transport uses its own duplicate, so tags cannot collide).
    private final class RawPingPong {
        let buffer: UnsafeMutableRawPointer
        static let tag: Int32 = 7

        init(maxBytes: Int) {
            buffer = .allocate(byteCount: maxBytes, alignment: 64)
            buffer.initializeMemory(as: UInt8.self, repeating: 1, count: maxBytes)
        }

        deinit { buffer.deallocate() }

        /// Each round trip's seconds on rank 0, nothing on the responder.
        @discardableResult
        func run(rank: Int, peer: Int, bytes: Int, iterations: Int) throws -> [Double] {
            let world = twobp_mpi_comm_world()
            let count = Int32(bytes)
            if rank == 0 {
                return try TransportBenchmark.timedRoundTrips(iterations) {
                    try check(MPI_Send(buffer, count, twobp_mpi_byte(), Int32(peer), Self.tag, world), rank, peer)
                    try check(MPI_Recv(buffer, count, twobp_mpi_byte(), Int32(peer), Self.tag, world,
                                       twobp_mpi_status_ignore()), rank, peer)
                }
            }
            for _ in 0..<iterations {
                try check(MPI_Recv(buffer, count, twobp_mpi_byte(), Int32(peer), Self.tag, world,
                                   twobp_mpi_status_ignore()), rank, peer)
                try check(MPI_Send(buffer, count, twobp_mpi_byte(), Int32(peer), Self.tag, world), rank, peer)
            }
            return []
        }

        private func check(_ code: Int32, _ rank: Int, _ peer: Int) throws {
            try MPIEnvironment.check(code, "rank \(rank): raw ping-pong with rank \(peer)")
        }
    }
}
