// Validates FHIR R4 resources with HAPI FHIR's validator (the HL7 instance validator behind
// validator_cli), entirely offline: the core R4 definitions come from the
// hapi-fhir-validation-resources-r4 jar and terminology from the validator's in-memory services,
// so nothing is fetched from a package registry or a terminology server.
//
// Reads one resource per line (single-line JSON) on stdin, answers one JSON line per resource:
//   {"errors": n, "warnings": n, "issues": [{"severity", "location", "message"}]}
// One JVM serves a whole test session: loading the definitions costs seconds, validating does not.
import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.context.support.DefaultProfileValidationSupport;
import ca.uhn.fhir.validation.FhirValidator;
import ca.uhn.fhir.validation.ResultSeverityEnum;
import ca.uhn.fhir.validation.SingleValidationMessage;
import ca.uhn.fhir.validation.ValidationResult;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import org.hl7.fhir.common.hapi.validation.support.CommonCodeSystemsTerminologyService;
import org.hl7.fhir.common.hapi.validation.support.InMemoryTerminologyServerValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.SnapshotGeneratingValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.ValidationSupportChain;
import org.hl7.fhir.common.hapi.validation.validator.FhirInstanceValidator;

public class ValidateFhir {
    public static void main(String[] args) throws Exception {
        FhirContext ctx = FhirContext.forR4();
        ValidationSupportChain chain = new ValidationSupportChain(
                new DefaultProfileValidationSupport(ctx),
                new CommonCodeSystemsTerminologyService(ctx),
                new InMemoryTerminologyServerValidationSupport(ctx),
                new SnapshotGeneratingValidationSupport(ctx));
        FhirInstanceValidator instanceValidator = new FhirInstanceValidator(chain);
        // Our own CodeSystems and extensions are documented, not published as definitions: an
        // unknown code system of ours is a warning, not an error (nothing to look up offline).
        instanceValidator.setAnyExtensionsAllowed(true);
        instanceValidator.setNoTerminologyChecks(false);
        FhirValidator validator = ctx.newValidator();
        validator.registerValidatorModule(instanceValidator);

        PrintStream out = new PrintStream(System.out, true, StandardCharsets.UTF_8);
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        out.println("{\"ready\": true}");
        String line;
        while ((line = in.readLine()) != null) {
            if (line.isBlank()) continue;
            StringBuilder answer = new StringBuilder();
            int errors = 0, warnings = 0;
            answer.append("{\"issues\": [");
            try {
                ValidationResult result = validator.validateWithResult(line);
                boolean first = true;
                for (SingleValidationMessage m : result.getMessages()) {
                    ResultSeverityEnum s = m.getSeverity();
                    if (s == ResultSeverityEnum.ERROR || s == ResultSeverityEnum.FATAL) errors++;
                    else if (s == ResultSeverityEnum.WARNING) warnings++;
                    if (!first) answer.append(", ");
                    first = false;
                    answer.append("{\"severity\": ").append(quote(s.getCode()))
                          .append(", \"location\": ").append(quote(m.getLocationString()))
                          .append(", \"message\": ").append(quote(m.getMessage())).append("}");
                }
            } catch (Exception e) {
                errors++;
                answer.append("{\"severity\": \"fatal\", \"location\": \"\", \"message\": ")
                      .append(quote(e.toString())).append("}");
            }
            answer.append("], \"errors\": ").append(errors).append(", \"warnings\": ").append(warnings).append("}");
            out.println(answer);
        }
    }

    private static String quote(String s) {
        if (s == null) return "null";
        StringBuilder b = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            switch (c) {
                case '"' -> b.append("\\\"");
                case '\\' -> b.append("\\\\");
                case '\n' -> b.append("\\n");
                case '\r' -> b.append("\\r");
                case '\t' -> b.append("\\t");
                default -> { if (c < 0x20) b.append(String.format("\\u%04x", (int) c)); else b.append(c); }
            }
        }
        return b.append('"').toString();
    }
}
