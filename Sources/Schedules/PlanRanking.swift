import Foundation

/// One schedule's predicted step: what `twobp plan` ranks.
public struct PlanEntry: Codable, Sendable, Equatable {
    /// Name as `Schedule.name` writes it, e.g. `1f1b-1+2bp`, or `auto`.
    public var schedule: String
    /// The generator (`ScheduleKind` raw value) or `auto`.
    public var kind: String
    public var twoBP: Bool
    public var microBatches: Int
    public var chunksPerRank: Int
    /// Samples (sequences) one step trains.
    public var samplesPerStep: Int
    /// Simulated seconds of one step's forwards and backwards.
    public var stepTime: Double
    /// samplesPerStep / stepTime.
    public var samplesPerSecond: Double
    public var tokensPerSecond: Double
    /// Idle share of the step, averaged over ranks.
    public var meanBubbleRatio: Double
    public var peakMemory: [Int]
    /// Whether some rank's peak exceeds the memory limit.
    public var overLimit: Bool
    /// Throughput over the same generator's plain (fused-backward) variant; nil for plain entries and auto.
    public var speedupOverPlain: Double?
}

/// A candidate `twobp plan` could not price, and why.
public struct PlanSkip: Codable, Sendable, Equatable {
    public var schedule: String
    public var reason: String
}

/// Every candidate, fastest first.
public struct PlanReport: Codable, Sendable {
    public var ranks: Int
    public var microBatchSize: Int
    public var sequenceLength: Int
    public var memoryLimit: Int?
    /// Sorted by `samplesPerSecond`, highest first (ties by name).
    public var entries: [PlanEntry]
    public var skipped: [PlanSkip]
}

/// Ranks pipeline schedules by simulated throughput for one model and pipeline size.
///
/// The micro-batch size is fixed and each schedule runs its own number of
/// micro-batches (`ScheduleKind.defaultMicroBatches`, or `microBatches` for
/// all), so larger M trains more samples per step and amortises the
/// bubble, as in the 2BP paper's 1F1B-1 (M = N) and 1F1B-2 (M = 2N). Naive has
/// no micro-batching: it runs the batch of `microBatches ?? ranks`
/// micro-batches (GPipe's batch) as one, priced `k` times a micro-batch.
public enum PlanRanking {
    public struct Settings: Sendable {
        public var ranks: Int
        /// nil: each schedule's default.
        public var microBatches: Int?
        /// Sequences per micro-batch (for samples/s and tokens/s).
        public var microBatchSize: Int
        public var sequenceLength: Int
        /// Bytes per rank; nil: no limit.
        public var memoryLimit: Int?
        /// Candidates; by default every generator, with and without 2BP, and auto.
        public var kinds: [PlanInputs.Choice]

        public init(ranks: Int, microBatches: Int? = nil, microBatchSize: Int = 1, sequenceLength: Int,
                    memoryLimit: Int? = nil,
                    kinds: [PlanInputs.Choice] = ScheduleKind.allCases.map { .kind($0) } + [.auto]) {
            self.ranks = ranks
            self.microBatches = microBatches
            self.microBatchSize = microBatchSize
            self.sequenceLength = sequenceLength
            self.memoryLimit = memoryLimit
            self.kinds = kinds
        }
    }

    /// - Parameter costs: the cost model for `virtualStages` stages and a
    ///   micro-batch `scale` times the configured size (scale > 1 only for naive).
    ///   A candidate whose costs throw is listed as skipped with the message.
    /// - Parameter progress: called before each candidate with how many are done, of how many, and its name.
    public static func rank(_ settings: Settings,
                            costs: (_ virtualStages: Int, _ scale: Int) throws -> CostModel,
                            progress: (_ done: Int, _ total: Int, _ candidate: String) -> Void = { _, _, _ in }) throws -> PlanReport {
        try PlanInputs.checkStages(settings.ranks)
        guard settings.microBatchSize >= 1, settings.sequenceLength >= 1 else {
            throw ScheduleError(.invalidRequest, "micro-batch size and sequence length must be at least 1")
        }
        if let microBatches = settings.microBatches, microBatches < 1 {
            throw ScheduleError(.invalidRequest, "--micro-batches must be at least 1, got \(microBatches)")
        }
        var entries: [PlanEntry] = []
        var skipped: [PlanSkip] = []
        func note(_ name: String, _ error: Error) {
            let message = (error as? ScheduleError)?.message.split(separator: "\n").first.map(String.init) ?? "\(error)"
            skipped.append(PlanSkip(schedule: name, reason: message))
        }
        let total = settings.kinds.reduce(0) { count, choice in if case .auto = choice { count + 1 } else { count + 2 } }
        var done = 0
        for choice in settings.kinds {
            switch choice {
            case let .kind(kind):
                for twoBP in [false, true] {
                    let name = kind.rawValue + (twoBP ? Schedule.twoBPSuffix : "")
                    progress(done, total, name)
                    done += 1
                    do {
                        let naiveScale = settings.microBatches ?? ScheduleKind.gpipe.defaultMicroBatches(ranks: settings.ranks)
                        let microBatches = kind == .naive ? 1 : settings.microBatches
                        let scale = kind == .naive ? naiveScale : 1
                        let schedule = try Schedule.make(kind: kind, ranks: settings.ranks, microBatches: microBatches, twoBP: twoBP)
                        let model = try costs(schedule.virtualStages, scale)
                        let timeline = try Simulator.simulate(schedule, costs: model)
                        entries.append(entry(schedule: schedule, kind: kind.rawValue, twoBP: twoBP, timeline: timeline,
                                             samples: schedule.microBatches * scale * settings.microBatchSize, settings: settings))
                    } catch {
                        note(name, error)
                    }
                }
            case .auto:
                let microBatches = settings.microBatches ?? 2 * settings.ranks
                progress(done, total, PlanInputs.Choice.autoName)
                done += 1
                do {
                    let model = try costs(settings.ranks, 1)
                    let result = try AutoSchedule.build(ranks: settings.ranks, microBatches: microBatches, costs: model,
                                                        memoryLimit: settings.memoryLimit)
                    entries.append(entry(schedule: result.schedule, kind: PlanInputs.Choice.autoName, twoBP: true,
                                         timeline: result.timeline, samples: microBatches * settings.microBatchSize,
                                         settings: settings))
                } catch {
                    note(PlanInputs.Choice.autoName, error)
                }
            }
        }
        guard !entries.isEmpty else {
            var reasons: [String] = []
            for skip in skipped where !reasons.contains(skip.reason) { reasons.append(skip.reason) }
            throw ScheduleError(.invalidRequest, "no schedule can be planned: " + reasons.joined(separator: "; "))
        }
        for index in entries.indices where entries[index].twoBP && entries[index].kind != PlanInputs.Choice.autoName {
            if let plain = entries.first(where: { $0.kind == entries[index].kind && !$0.twoBP }), plain.samplesPerSecond > 0 {
                entries[index].speedupOverPlain = entries[index].samplesPerSecond / plain.samplesPerSecond
            }
        }
        entries.sort { ($0.samplesPerSecond, $1.schedule) > ($1.samplesPerSecond, $0.schedule) }
        return PlanReport(ranks: settings.ranks, microBatchSize: settings.microBatchSize, sequenceLength: settings.sequenceLength,
                          memoryLimit: settings.memoryLimit, entries: entries, skipped: skipped)
    }

    private static func entry(schedule: Schedule, kind: String, twoBP: Bool, timeline: Timeline, samples: Int,
                              settings: Settings) -> PlanEntry {
        let step = timeline.stepTime
        let perSecond = step > 0 ? Double(samples) / step : 0
        let peaks = timeline.peakMemory ?? []
        return PlanEntry(schedule: schedule.name, kind: kind, twoBP: twoBP, microBatches: schedule.microBatches,
                         chunksPerRank: schedule.chunksPerRank, samplesPerStep: samples, stepTime: step,
                         samplesPerSecond: perSecond, tokensPerSecond: perSecond * Double(settings.sequenceLength),
                         meanBubbleRatio: timeline.meanBubbleRatio, peakMemory: peaks,
                         overLimit: settings.memoryLimit.map { limit in peaks.contains { $0 > limit } } ?? false,
                         speedupOverPlain: nil)
    }
}

extension PlanReport {
    /// A fixed-width table, one line per entry, fastest first; over-limit
    /// entries end in `OVER LIMIT`, skipped candidates are listed after.
    public var table: String {
        let header = ["rank", "schedule", "M", "samples/step", "step", "tokens/s", "samples/s", "2BP speedup", "bubble", "peak memory per rank"]
        var rows: [[String]] = [header]
        for (index, entry) in entries.enumerated() {
            let unit = RenderStyle.unit(for: entry.stepTime)
            rows.append([
                "\(index + 1)", entry.schedule, "\(entry.microBatches)", "\(entry.samplesPerStep)",
                RenderStyle.format(entry.stepTime, unit: unit),
                String(format: "%.4g", entry.tokensPerSecond), String(format: "%.4g", entry.samplesPerSecond),
                entry.speedupOverPlain.map { String(format: "%.3fx", $0) } ?? "-",
                RenderStyle.percent(entry.meanBubbleRatio),
                entry.peakMemory.map(RenderStyle.bytes).joined(separator: " / ") + (entry.overLimit ? "  OVER LIMIT" : ""),
            ])
        }
        let widths = header.indices.map { column in rows.map { $0[column].count }.max() ?? 0 }
        var lines = rows.map { row in
            row.enumerated().map { column, cell in
                column == row.count - 1 ? cell : cell.padding(toLength: widths[column], withPad: " ", startingAt: 0)
            }.joined(separator: "  ")
        }
        if let memoryLimit {
            lines.append("memory limit \(RenderStyle.bytes(memoryLimit)) per rank")
        }
        for skip in skipped {
            lines.append("skipped \(skip.schedule): \(skip.reason)")
        }
        return lines.joined(separator: "\n")
    }
}
