import Files
import Foundation
import Tensor

/// Every model family TwoBP knows, by `model_type`: the one list the CLI, resume and checkpoint
/// loading dispatch through. A family adds one line here.
public enum ModelRegistry {
    public static let families: [any ModelConfig.Type] = [
        LlamaConfig.self,
        MambaConfig.self,
        BertConfig.self,
        ResNetConfig.self,
    ]

    /// Every named configuration, in help-text order.
    public static var names: [String] {
        families.flatMap { family in family.namedConfigs.map(\.name) }
    }

    /// What `bench paper` runs of `family`: the named configuration ending in `-measuredSize`
    /// (`llama-small`), measured here, and its last named one (`llama-7b`), simulated.
    public static func benchmarkConfigs(of family: any ModelConfig.Type, measuredSize: String)
        -> (small: (name: String, config: any ModelConfig), paper: (name: String, config: any ModelConfig))? {
        guard let small = family.namedConfigs.first(where: { $0.name.hasSuffix("-" + measuredSize) }),
              let paper = family.namedConfigs.last else { return nil }
        return (small, paper)
    }

    /// A named configuration (`llama-tiny`, …), or a `config.json` given by its path or by the
    /// folder holding it, decoded by the family its `model_type` names; validated either way.
    public static func resolve(_ nameOrPath: String) throws -> any ModelConfig {
        for family in families {
            if let entry = family.namedConfigs.first(where: { $0.name == nameOrPath }) { return entry.config }
        }
        let isFolder = FileIO.isDirectory(URL(fileURLWithPath: nameOrPath))
        guard isFolder || FileIO.exists(URL(fileURLWithPath: nameOrPath)) || nameOrPath.contains("/") || nameOrPath.hasSuffix(".json") else {
            throw TwoBPError("unknown model '\(nameOrPath)': expected one of \(names.joined(separator: ", ")) or the path of a config.json")
        }
        let url = isFolder ? URL(fileURLWithPath: nameOrPath).appendingPathComponent("config.json") : URL(fileURLWithPath: nameOrPath)
        return try decode(FileIO.read(url, what: "model config"), source: url.path)
    }

    /// Decodes a `config.json` by its `model_type` (a file without one is a LLaMa config, as
    /// TwoBP's first checkpoints were); `source` names it in errors.
    public static func decode(_ data: Data, source: String = "config.json") throws -> any ModelConfig {
        struct ModelType: Decodable {
            let modelType: String?
            enum CodingKeys: String, CodingKey { case modelType = "model_type" }
        }
        do {
            let type = try JSONDecoder().decode(ModelType.self, from: data).modelType ?? LlamaConfig.modelType
            guard let family = families.first(where: { $0.modelType == type }) else {
                throw TwoBPError("model_type '\(type)' is not supported (known: \(families.map { $0.modelType }.joined(separator: ", ")))")
            }
            let config = try family.decode(data)
            try config.validate()
            return config
        } catch let error as TwoBPError {
            throw TwoBPError("\(source): \(error.message)")
        } catch let error as DecodingError {
            throw TwoBPError("\(source): \(error.summary)")
        } catch {
            throw TwoBPError("\(source): \(error)")
        }
    }
}

extension ModelConfig {
    /// `named`, erased, for the registry's lookups.
    static var namedConfigs: [(name: String, config: any ModelConfig)] { named.map { ($0.name, $0.config) } }
}
