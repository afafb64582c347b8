import Foundation

/// What the `schedule`, `plan` and `profile` commands take from the command
/// line, checked here (not in the commands) so tests reach every error message.
public enum PlanInputs {
    /// A schedule name as given to `--schedule`: one of the generators, or `auto`.
    public enum Choice: Sendable, Equatable, CustomStringConvertible {
        case kind(ScheduleKind)
        /// `AutoSchedule.build`: a 2BP schedule built for the costs and the memory limit.
        case auto

        public static let autoName = "auto"

        /// Parses a name, ignoring case; the error lists every valid name.
        public init(name: String) throws {
            if name.lowercased() == Self.autoName {
                self = .auto
                return
            }
            guard let kind = ScheduleKind(rawValue: name.lowercased()) else {
                let names = ScheduleKind.allCases.map(\.rawValue) + [Self.autoName]
                throw ScheduleError(.invalidRequest, "unknown schedule '\(name)'; expected one of \(names.joined(separator: ", "))")
            }
            self = .kind(kind)
        }

        public var description: String {
            switch self {
            case let .kind(kind): kind.rawValue
            case .auto: Self.autoName
            }
        }
    }

    /// Checks a pipeline size before anything is built.
    public static func checkStages(_ stages: Int) throws {
        guard stages >= 1 else {
            throw ScheduleError(.invalidRequest, "--stages must be at least 1, got \(stages)")
        }
        guard stages <= ScheduleRequest.maxRanks else {
            throw ScheduleError(.invalidRequest, "--stages \(stages) is more than the \(ScheduleRequest.maxRanks) a schedule accepts")
        }
    }

    /// The cost model of a `--costs` value: a JSON file (a path ending in
    /// `.json`, or any existing file) or the uniform string form `F=1,I=1,W=1`.
    /// nil gives equal costs F = I = W = 1 and free communication.
    public static func costModel(_ argument: String?) throws -> CostModel {
        guard let argument else { return .uniform(forward: 1, backwardInput: 1, backwardWeight: 1) }
        let trimmed = argument.trimmingCharacters(in: .whitespaces)
        guard !trimmed.isEmpty else {
            throw ScheduleError(.parse, "--costs is empty; give F=1,I=1,W=1 or a cost model JSON file")
        }
        var isDirectory: ObjCBool = false
        let exists = FileManager.default.fileExists(atPath: trimmed, isDirectory: &isDirectory)
        if trimmed.lowercased().hasSuffix(".json") || (exists && !isDirectory.boolValue) {
            guard exists, !isDirectory.boolValue, let data = FileManager.default.contents(atPath: trimmed) else {
                throw ScheduleError(.parse, "cannot read the cost model file '\(trimmed)'")
            }
            do {
                return try CostModel(json: data)
            } catch let error as ScheduleError {
                throw ScheduleError(error.reason, "\(trimmed): \(error.message)")
            }
        }
        do {
            return try CostModel(parsing: trimmed)
        } catch let error as ScheduleError {
            throw ScheduleError(error.reason, "--costs '\(trimmed)': \(error.message)")
        }
    }

    /// Bytes from `80GiB`, `512MiB`, `16GB`, `1e9` or a plain integer.
    /// Binary (KiB, MiB, GiB, TiB) and decimal (KB, MB, GB, TB) suffixes, any case.
    public static func bytes(_ text: String) throws -> Int {
        let units: [(String, Double)] = [
            ("kib", 1024), ("mib", 1024 * 1024), ("gib", 1024 * 1024 * 1024), ("tib", 1024 * 1024 * 1024 * 1024),
            ("kb", 1e3), ("mb", 1e6), ("gb", 1e9), ("tb", 1e12), ("b", 1),
        ]
        let lower = text.trimmingCharacters(in: .whitespaces).lowercased()
        var number = lower
        var scale = 1.0
        for (suffix, factor) in units where lower.hasSuffix(suffix) {
            number = String(lower.dropLast(suffix.count)).trimmingCharacters(in: .whitespaces)
            scale = factor
            break
        }
        guard let value = Double(number), value.isFinite, value > 0, value * scale < 9e18 else {
            throw ScheduleError(.parse, "'\(text)' is not a positive size in bytes (e.g. 80GiB, 512MiB, 16e9)")
        }
        return Int((value * scale).rounded())
    }

    /// Uniform costs describe what a rank does per micro-batch; a schedule
    /// that cuts each rank's share into `chunksPerRank` chunks gives each
    /// chunk that fraction of the time and memory (the convention of
    /// docs/figures). Per-stage costs are returned unchanged.
    public static func perChunk(_ costs: CostModel, chunksPerRank: Int) -> CostModel {
        guard costs.stages.count == 1, chunksPerRank > 1 else { return costs }
        return costs.scaled(time: 1 / Double(chunksPerRank), memory: 1 / Double(chunksPerRank), staticMemory: 1 / Double(chunksPerRank))
    }
}

extension CostModel {
    /// Every stage's times multiplied by `time`, activation and stash bytes by
    /// `memory`, static bytes by `staticMemory`; the link's message by `memory`.
    ///
    /// Used to price a micro-batch `k` times larger (`time: k, memory: k,
    /// staticMemory: 1`), which assumes time and activations grow linearly
    /// with the tokens of a micro-batch, as FLOPs do.
    public func scaled(time: Double, memory: Double, staticMemory: Double = 1) -> CostModel {
        var copy = self
        copy.stages = stages.map { stage in
            StageCost(forward: stage.forward * time, backwardInput: stage.backwardInput * time,
                      backwardWeight: stage.backwardWeight * time,
                      concatenatedBackwardWeight: stage.concatenatedBackwardWeight?.map { $0 * time },
                      activationBytes: Int((Double(stage.activationBytes) * memory).rounded()),
                      stashBytes: Int((Double(stage.stashBytes) * memory).rounded()),
                      staticBytes: Int((Double(stage.staticBytes) * staticMemory).rounded()))
        }
        copy.messageBytes = Int((Double(messageBytes) * memory).rounded())
        return copy
    }
}
