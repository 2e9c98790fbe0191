using System.Reflection;
using System.Runtime.CompilerServices;
using System.Text;

namespace Microsoft.ML.Quantization.Tests;

/// <summary>
/// The library's public surface, listed by reflection, must equal the checked-in docs/api/public-api.txt: adding,
/// removing or changing a public type or member fails this test until the listing is regenerated, so every change of
/// the surface is deliberate and shows in review. Regenerate with
/// <c>QATML_UPDATE_PUBLIC_API=1 dotnet test --filter PublicApiTests</c>.
/// </summary>
public sealed class PublicApiTests
{
    private static string ListingPath => Path.Combine(TestData.RepoRoot, "docs", "api", "public-api.txt");

    [Fact]
    public void PublicSurface_MatchesTheCheckedInListing()
    {
        string actual = Listing(typeof(QuantizationCatalog).Assembly);
        if (Environment.GetEnvironmentVariable("QATML_UPDATE_PUBLIC_API") == "1")
        {
            Directory.CreateDirectory(Path.GetDirectoryName(ListingPath)!);
            File.WriteAllText(ListingPath, actual);
        }
        string expected = File.Exists(ListingPath) ? File.ReadAllText(ListingPath).ReplaceLineEndings("\n") : "";
        if (expected == actual)
            return;
        var expectedLines = Qualified(expected).ToHashSet(StringComparer.Ordinal);
        var actualLines = Qualified(actual).ToHashSet(StringComparer.Ordinal);
        var added = Qualified(actual).Where(l => !expectedLines.Contains(l)).Select(l => "+ " + l);
        var removed = Qualified(expected).Where(l => !actualLines.Contains(l)).Select(l => "- " + l);
        Assert.Fail("The public API differs from docs/api/public-api.txt (regenerate it with QATML_UPDATE_PUBLIC_API=1 if the change is meant):\n"
            + string.Join('\n', removed.Concat(added)));
    }

    /// <summary>The listing's lines with each member prefixed by its type, so the same member line in two types differs.</summary>
    private static IEnumerable<string> Qualified(string listing)
    {
        string type = "";
        foreach (string line in listing.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            if (!line.StartsWith(' '))
                type = line;
            yield return line.StartsWith(' ') ? $"{type} ::{line}" : line;
        }
    }

    [Fact]
    public void Listing_ShowsPublicMembersAndHidesInternalOnes()
    {
        string listing = Listing(typeof(QuantizationCatalog).Assembly);
        Assert.Contains("public sealed class Microsoft.ML.Quantization.QuantizationCatalog", listing);
        Assert.Contains("  public Microsoft.ML.Quantization.Calibration.CalibrationEstimator Calibrate(string modelFile, "
            + "Microsoft.ML.Quantization.Calibration.CalibrationMethod method = MinMax, int sampleCount = 1000)", listing);
        Assert.DoesNotContain("ModelPersistence", listing);   // internal type
        Assert.DoesNotContain(" Context", listing);            // internal property of the catalog
    }

    /// <summary>One line per public type, then one indented line per public or protected member it declares (constructors first, then by name).</summary>
    internal static string Listing(Assembly assembly)
    {
        var text = new StringBuilder();
        // Compiler-made types (a C# 14 extension block's marker types) have unspeakable names; their members show on the static class.
        foreach (Type type in assembly.GetExportedTypes().Where(t => !t.FullName!.Contains('<')).OrderBy(t => t.FullName, StringComparer.Ordinal))
        {
            text.Append(TypeHeader(type)).Append('\n');
            foreach (var (_, member) in Members(type).OrderBy(m => m.Name, StringComparer.Ordinal).ThenBy(m => m.Line, StringComparer.Ordinal))
                text.Append("  ").Append(member).Append('\n');
        }
        return text.ToString();
    }

    private static string TypeHeader(Type type)
    {
        string kind = type.IsEnum ? "enum"
            : type.IsValueType ? (type.GetMethod("<Clone>$") is not null || IsRecordStruct(type) ? "record struct" : "struct")
            : type.IsInterface ? "interface"
            : typeof(Delegate).IsAssignableFrom(type) ? "delegate"
            : type.GetMethod("<Clone>$") is not null ? "record"
            : "class";
        string modifiers = type.IsAbstract && type.IsSealed ? "static "
            : type.IsInterface || type.IsValueType || type.IsEnum ? ""
            : type.IsSealed ? "sealed " : type.IsAbstract ? "abstract " : "";
        if (type.IsValueType && !type.IsEnum && type.GetCustomAttribute<IsReadOnlyAttribute>() is not null)
            modifiers = "readonly " + modifiers;
        var bases = new List<string>();
        if (type.IsEnum)
            bases.Add(Name(Enum.GetUnderlyingType(type)));
        else if (type.BaseType is { } b && b != typeof(object) && b != typeof(ValueType))
            bases.Add(Name(b));
        if (!type.IsEnum)
            bases.AddRange(type.GetInterfaces().Where(i => i.IsPublic || i.IsNestedPublic).Select(i => Name(i)).Where(n => !n.StartsWith("System.IEquatable", StringComparison.Ordinal)).Order(StringComparer.Ordinal));
        return $"public {modifiers}{kind} {Name(type)}{(bases.Count > 0 ? " : " + string.Join(", ", bases) : "")}";
    }

    private static bool IsRecordStruct(Type type)
        => type.GetMethod("PrintMembers", BindingFlags.Instance | BindingFlags.NonPublic) is not null;

    private static IEnumerable<(string Name, string Line)> Members(Type type)
    {
        const BindingFlags flags = BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Instance | BindingFlags.Static | BindingFlags.DeclaredOnly;
        if (type.IsEnum)
        {
            foreach (FieldInfo f in type.GetFields(BindingFlags.Public | BindingFlags.Static))
                yield return (f.Name, $"{f.Name} = {Convert.ToUInt64(f.GetRawConstantValue(), System.Globalization.CultureInfo.InvariantCulture)}");
            yield break;
        }
        foreach (MemberInfo m in type.GetMembers(flags))
        {
            if (m.Name.Contains('<') || m.IsDefined(typeof(CompilerGeneratedAttribute)))
                continue;
            switch (m)
            {
                case ConstructorInfo c when Visible(c) && !(type.IsValueType && c.GetParameters().Length == 0):
                    yield return ("", $"{Access(c)} {TypeShortName(type)}({Parameters(c)})");
                    break;
                case MethodInfo mi when Visible(mi) && !mi.IsSpecialName && !IsRecordPlumbing(type, mi):
                    yield return (mi.Name, $"{Access(mi)} {Modifiers(mi)}{Name(mi.ReturnType, mi.ReturnParameter)} {mi.Name}{Generic(mi)}({Parameters(mi)})");
                    break;
                case MethodInfo op when Visible(op) && op.IsSpecialName && op.Name.StartsWith("op_", StringComparison.Ordinal) && !IsRecordPlumbing(type, op):
                    yield return (op.Name, $"{Access(op)} static {Name(op.ReturnType)} {op.Name}({Parameters(op)})");
                    break;
                case PropertyInfo p:
                {
                    MethodInfo? get = p.GetMethod is { } g && Visible(g) ? g : null;
                    MethodInfo? set = p.SetMethod is { } s && Visible(s) ? s : null;
                    MethodInfo? any = get ?? set;
                    if (any is null || (type.GetMethod("<Clone>$") is not null && p.Name == "EqualityContract"))
                        break;
                    bool init = set?.ReturnParameter.GetRequiredCustomModifiers().Contains(typeof(IsExternalInit)) == true;
                    string accessors = (get is not null ? "get; " : "") + (set is not null ? (init ? "init; " : "set; ") : "");
                    string indexer = p.GetIndexParameters() is { Length: > 0 } ip ? $"this[{string.Join(", ", ip.Select(Parameter))}]" : p.Name;
                    yield return (p.Name, $"{Access(any)} {Modifiers(any)}{Name(p.PropertyType, p)} {indexer} {{ {accessors}}}");
                    break;
                }
                case FieldInfo f when f.IsPublic || f.IsFamily || f.IsFamilyOrAssembly:
                    string constant = f.IsLiteral ? $" = {Literal(f.GetRawConstantValue())}" : "";
                    yield return (f.Name, $"{(f.IsPublic ? "public" : "protected")} {(f.IsLiteral ? "const " : f.IsStatic ? "static " : "")}{(f.IsInitOnly ? "readonly " : "")}{Name(f.FieldType, f)} {f.Name}{constant}");
                    break;
                case EventInfo e when e.AddMethod is { } add && Visible(add):
                    yield return (e.Name, $"{Access(add)} event {Name(e.EventHandlerType!)} {e.Name}");
                    break;
                case Type nested when nested.IsNestedPublic:
                    break; // listed as a type of its own
            }
        }
    }

    /// <summary>What the compiler writes into every record (equality, printing, deconstruction stays listed).</summary>
    private static bool IsRecordPlumbing(Type type, MethodInfo m)
        => (type.GetMethod("<Clone>$") is not null || IsRecordStruct(type))
           && m.Name is "Equals" or "GetHashCode" or "ToString" or "PrintMembers" or "op_Equality" or "op_Inequality";

    private static bool Visible(MethodBase m) => m.IsPublic || m.IsFamily || m.IsFamilyOrAssembly;

    private static string Access(MethodBase m) => m.IsPublic ? "public" : "protected";

    private static string Modifiers(MethodInfo m)
    {
        if (m.IsStatic)
            return "static ";
        if (m.IsAbstract)
            return "abstract ";
        if (m.IsVirtual && !m.IsFinal)
            return m.GetBaseDefinition() != m ? "override " : "virtual ";
        return m.IsVirtual && m.GetBaseDefinition() != m ? "override " : "";
    }

    private static string Generic(MethodInfo m)
        => m.IsGenericMethodDefinition ? "<" + string.Join(", ", m.GetGenericArguments().Select(a => a.Name)) + ">" : "";

    private static string Parameters(MethodBase m) => string.Join(", ", m.GetParameters().Select(Parameter));

    private static string Parameter(ParameterInfo p)
    {
        string prefix = p.IsOut ? "out " : p.ParameterType.IsByRef ? (p.IsIn ? "in " : "ref ") : p.IsDefined(typeof(ParamArrayAttribute)) ? "params " : "";
        Type t = p.ParameterType.IsByRef ? p.ParameterType.GetElementType()! : p.ParameterType;
        string text = $"{prefix}{Name(t, p)} {p.Name}";
        return p.HasDefaultValue ? $"{text} = {Literal(p.RawDefaultValue, t)}" : text;
    }

    private static string Literal(object? value, Type? type = null) => value switch
    {
        null => type is not null && (type.IsValueType && Nullable.GetUnderlyingType(type) is null) ? "default" : "null",
        string s => $"\"{s}\"",
        bool b => b ? "true" : "false",
        _ when type is not null && (Nullable.GetUnderlyingType(type) ?? type).IsEnum
            => Enum.GetName(Nullable.GetUnderlyingType(type) ?? type, value) ?? value.ToString()!,
        IFormattable f => f.ToString(null, System.Globalization.CultureInfo.InvariantCulture),
        _ => value.ToString()!,
    };

    private static string TypeShortName(Type type) => type.Name.Split('`')[0];

    /// <summary>A type's C# name, with nullable annotations when <paramref name="context"/> carries them.</summary>
    private static string Name(Type type, object? context = null)
    {
        NullabilityInfo? nullability = context switch
        {
            ParameterInfo p => new NullabilityInfoContext().Create(p),
            PropertyInfo p => new NullabilityInfoContext().Create(p),
            FieldInfo f => new NullabilityInfoContext().Create(f),
            _ => null,
        };
        return Name(type, nullability);
    }

    private static string Name(Type type, NullabilityInfo? nullability)
    {
        if (Nullable.GetUnderlyingType(type) is { } underlying)
            return Name(underlying, (NullabilityInfo?)null) + "?";
        string suffix = nullability is { ReadState: NullabilityState.Nullable } && !type.IsValueType ? "?" : "";
        if (type.IsArray)
            return Name(type.GetElementType()!, nullability?.ElementType) + "[" + new string(',', type.GetArrayRank() - 1) + "]" + suffix;
        string? keyword = Type.GetTypeCode(type) switch
        {
            TypeCode.Boolean => "bool", TypeCode.Byte => "byte", TypeCode.SByte => "sbyte", TypeCode.Int16 => "short", TypeCode.UInt16 => "ushort",
            TypeCode.Int32 => "int", TypeCode.UInt32 => "uint", TypeCode.Int64 => "long", TypeCode.UInt64 => "ulong", TypeCode.Single => "float",
            TypeCode.Double => "double", TypeCode.Decimal => "decimal", TypeCode.Char => "char", TypeCode.String => "string",
            _ => type == typeof(object) ? "object" : type == typeof(void) ? "void" : null,
        };
        if (keyword is not null && !type.IsEnum)
            return keyword + suffix;
        if (type.IsGenericParameter)
            return type.Name + suffix;
        string name = (type.IsNested ? Name(type.DeclaringType!, (NullabilityInfo?)null) + "." : type.Namespace + ".") + TypeShortName(type);
        if (type.IsGenericType)
        {
            Type[] args = type.GetGenericArguments();
            NullabilityInfo[] argInfo = nullability?.GenericTypeArguments ?? [];
            name += "<" + string.Join(", ", args.Select((a, i) => Name(a, i < argInfo.Length ? argInfo[i] : null))) + ">";
        }
        return name + suffix;
    }
}
