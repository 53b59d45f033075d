"""The policy pack: rules that `pulumi preview`, the tests and the offline plan share."""
