// Linked with one layer library whole (every object, used or not) and only the libraries it
// declares: an undefined symbol means the layer calls into a layer it may not use.
int main() { return 0; }
